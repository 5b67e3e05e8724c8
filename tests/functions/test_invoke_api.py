"""The Invoke API on the admin listener, judged by botocore's own Lambda client."""
from __future__ import annotations

import base64
import json
import time

import botocore.session
import pytest
from botocore.config import Config

from .conftest import gateway

CONFIG = """
functions:
  echo: {handler: basic.echo, code: "{fixtures}", runtime: inline}
  fail: {handler: basic.fail, code: "{fixtures}", runtime: process}
  pecho: {handler: basic.echo, code: "{fixtures}", runtime: process}
apis: {}
"""


@pytest.fixture(scope="module")
def gw():
    g = gateway(CONFIG, admin=True)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    s = botocore.session.get_session()
    return s.create_client("lambda", region_name="us-east-1", endpoint_url=gw.admin_url,
                           aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="dummy",
                           config=Config(retries={"max_attempts": 1}))


@pytest.mark.parametrize("name", ["echo", "pecho"])
def test_request_response(client, name):
    r = client.invoke(FunctionName=name, Payload=json.dumps({"hello": "world"}).encode())
    assert r["StatusCode"] == 200
    assert "FunctionError" not in r
    assert r["ExecutedVersion"] == "$LATEST"
    body = json.loads(r["Payload"].read())
    assert body["event"] == {"hello": "world"}
    assert body["ctx"]["function_name"] == name


def test_by_arn_and_qualifier(client):
    arn = "arn:aws:lambda:us-east-1:123456789012:function:echo"
    r = client.invoke(FunctionName=arn, Payload=b"{}", Qualifier="$LATEST")
    assert r["StatusCode"] == 200


def test_event_is_202_and_runs(client, gw):
    r = client.invoke(FunctionName="pecho", InvocationType="Event", Payload=json.dumps({"async": 1}).encode())
    assert r["StatusCode"] == 202
    assert r["Payload"].read() == b""
    rid = r["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 10
    while f"REPORT RequestId: {rid}" not in gw.logs():
        assert time.monotonic() < deadline, "the Event invocation never ran"
        time.sleep(0.05)


def test_dry_run_is_204(client):
    r = client.invoke(FunctionName="echo", InvocationType="DryRun")
    assert r["StatusCode"] == 204


def test_function_error_and_log_tail(client):
    r = client.invoke(FunctionName="fail", Payload=b"{}", LogType="Tail")
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    err = json.loads(r["Payload"].read())
    assert err["errorType"] == "ValueError"
    assert err["errorMessage"] == "boom secret-detail"
    assert isinstance(err["stackTrace"], list) and err["stackTrace"]
    log = base64.b64decode(r["LogResult"]).decode()
    assert "about to fail" in log
    assert "START RequestId:" in log and "REPORT RequestId:" in log
    assert len(base64.b64decode(r["LogResult"])) <= 4096


def test_log_tail_is_the_last_4kb(client):
    big = {"pad": "x" * 10000}
    r = client.invoke(FunctionName="echo", Payload=json.dumps(big).encode(), LogType="Tail")
    log = base64.b64decode(r["LogResult"])
    assert len(log) <= 4096
    assert b"REPORT RequestId:" in log


def test_unknown_function(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="nope", Payload=b"{}")


def test_bad_payload(client):
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="echo", Payload=b"{not json")


def test_get_and_list_functions(client):
    cfg = client.get_function(FunctionName="pecho")["Configuration"]
    assert cfg["FunctionName"] == "pecho" and cfg["Handler"] == "basic.echo" and cfg["MemorySize"] == 128
    names = sorted(f["FunctionName"] for f in client.list_functions()["Functions"])
    assert names == ["echo", "fail", "pecho"]
