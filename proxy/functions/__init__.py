"""Lambda-style functions (DESIGN.md "Functions").

- ``spec``: one function's settings (``FunctionSpec``), decided at config time;
- ``events`` / ``responses``: API Gateway's payload formats 1.0 and 2.0, both ways;
- ``invocation``: what runtimes share: ``Result``, reserved concurrency (``Limiter``,
  ``Throttled``), START/END/REPORT logs;
- runtimes: ``inline`` (in the gateway), ``process`` (warm worker pool; ``worker`` is the
  child), ``runtime_api`` (serves the Lambda Runtime API to e.g. awslambdaric), ``remote``
  (a Lambda-compatible Invoke endpoint; ``sigv4`` signs);
- ``service``: ``gateway.services.functions`` + the ``gwproxy check`` import checks;
- ``integration``: the ``aws_proxy`` route integration; ``invoke_api``: Lambda's Invoke API
  on the admin listener.
"""
