"""The handler behind the locust function scenarios: answers what the nginx backend does."""

RESPONSE = {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": '{"id": 1, "name": "rex"}'}


def handler(event, context):
    return RESPONSE
