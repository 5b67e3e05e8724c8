"""Authorization (lifecycle step 4): API keys (``proxy.auth.apikeys``); JWT and Lambda
authorizers live beside it. Each module is a pipeline feature of its own."""
