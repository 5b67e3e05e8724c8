"""The inline runtime's timeouts with one loop timer per function (``_Deadlines``) instead of
one per call: each call still times out at its own deadline, whichever calls came and went
before it; a cancellation from outside still propagates; a handler that swallows its
cancellation still gets the timeout error; nothing is left behind; a second event loop
works. And ``invoke_now`` (the integration's call without a coroutine) answers exactly as
``invoke`` or leaves it to ``invoke``."""
from __future__ import annotations

import asyncio
import textwrap
import time

import pytest

from proxy.functions.inline import InlineRuntime
from proxy.functions.invocation import FunctionLog
from proxy.functions.spec import FunctionSpec

HANDLERS = '''
import asyncio
import time


async def nap(event, context):
    if event.get("sleep"):
        await asyncio.sleep(event["sleep"])
    return {"n": event.get("n")}


async def stubborn(event, context):
    """Swallows its cancellation and answers anyway."""
    try:
        await asyncio.sleep(event["sleep"])
    except asyncio.CancelledError:
        await asyncio.sleep(0.01)
        return {"swallowed": True}
    return {"swallowed": False}


def sync_nap(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise ValueError("failed " + str(event.get("n")))
    if event.get("say"):
        print(event["say"])
    return {"n": event.get("n"), "left": context.get_remaining_time_in_millis() > 0,
            "fn": context.function_name, "mem": context.memory_limit_in_mb,
            "group": context.log_group_name, "rid": context.aws_request_id}
'''


@pytest.fixture
def make(tmp_path, devnull):
    (tmp_path / "dl_handlers.py").write_text(textwrap.dedent(HANDLERS))
    made = []

    def make_(handler, mode="auto", timeout=3.0, concurrency=8):
        spec = FunctionSpec(name=f"dl_{handler}_{len(made)}", runtime="inline", handler="dl_handlers." + handler,
                            code=str(tmp_path), timeout=timeout, concurrency=concurrency, queue_wait=5.0,
                            inline_sync=mode)
        rt = InlineRuntime(spec, FunctionLog(spec.name, 128, fd=devnull), concurrency)
        made.append(rt)
        return rt
    yield make_


async def timed(rt, event, rid="rid"):
    t0 = time.monotonic()
    res = await rt.invoke(event, rid)
    return res, time.monotonic() - t0


def timed_out(res) -> bool:
    return res.error == "Unhandled" and res.value["errorType"] == "Sandbox.Timedout"


def test_staggered_async_calls_each_time_out_at_their_own_deadline(run, make):
    rt = make("nap", timeout=0.2)

    async def go():
        a = asyncio.ensure_future(timed(rt, {"sleep": 5}))
        await asyncio.sleep(0.1)
        b = asyncio.ensure_future(timed(rt, {"sleep": 5}))
        fast = await asyncio.gather(*(rt.invoke({"n": i}, f"f{i}") for i in range(5)))
        return await a, await b, fast

    (ra, ta), (rb, tb), fast = run(go())
    assert timed_out(ra) and timed_out(rb)
    assert 0.18 <= ta < 0.6 and 0.18 <= tb < 0.6
    assert [r.value for r in fast] == [{"n": i} for i in range(5)]
    assert rt._deadlines.active == {} and rt.limiter.free == 8


def test_timer_armed_by_a_finished_call_does_not_cut_a_later_one_short(run, make):
    rt = make("nap", timeout=0.3)

    async def go():
        first = await rt.invoke({"n": 1}, "r1")          # arms the timer for t0 + 0.3
        await asyncio.sleep(0.15)
        return first, await timed(rt, {"sleep": 5})     # its deadline: t0 + 0.45

    first, (res, took) = run(go())
    assert first.value == {"n": 1}
    assert timed_out(res) and 0.28 <= took < 0.9


def test_many_async_calls_mixed(run, make):
    rt = make("nap", timeout=0.15, concurrency=64)

    async def go():
        calls = [timed(rt, {"sleep": 0.5 if i % 3 == 0 else 0.01 * (i % 5), "n": i}, f"r{i}") for i in range(40)]
        return await asyncio.gather(*calls)

    out = run(go())
    for i, (res, took) in enumerate(out):
        if i % 3 == 0:
            assert timed_out(res) and 0.13 <= took < 0.5, (i, took)
        else:
            assert res.value == {"n": i}
    assert rt._deadlines.active == {} and rt.limiter.free == 64


def test_swallowed_cancellation_is_still_the_timeout_and_the_task_goes_on(run, make):
    rt = make("stubborn", timeout=0.1)

    async def go():
        res, took = await timed(rt, {"sleep": 5})
        await asyncio.sleep(0.01)          # the request's task was uncancelled: it goes on
        return res, took, asyncio.current_task().cancelling()

    res, took, cancelling = run(go())
    assert timed_out(res) and took < 1.0 and cancelling == 0


def test_outside_cancellation_propagates_and_leaves_nothing_behind(run, make):
    rt = make("nap", timeout=0.3)

    async def go():
        victim = asyncio.ensure_future(rt.invoke({"sleep": 5}, "victim"))
        other = asyncio.ensure_future(timed(rt, {"sleep": 5}))
        await asyncio.sleep(0.05)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        return await other

    res, took = run(go())
    assert timed_out(res) and 0.28 <= took < 0.9
    assert rt._deadlines.active == {} and rt.limiter.free == 8


def test_outside_cancellation_at_the_deadline_still_propagates(run, make):
    """Cancelled from outside and timed out at once: the outside cancellation wins."""
    rt = make("stubborn", timeout=0.1)

    async def go():
        task = asyncio.ensure_future(rt.invoke({"sleep": 5}, "r"))
        await asyncio.sleep(0.105)         # the deadline fired (or is about to)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return task.result()

    out = run(go())
    assert out == "cancelled" or timed_out(out)
    assert rt._deadlines.active == {}


def test_a_second_event_loop(run, make):
    rt = make("nap", timeout=0.1)
    for _ in range(2):            # a fresh loop each time; the first one is closed by then
        res, took = run(timed(rt, {"sleep": 5}))
        assert timed_out(res) and took < 0.6
        assert run(rt.invoke({"n": 3}, "r")).value == {"n": 3}


def test_calls_on_another_running_loop_get_timers_of_their_own(make):
    """While one loop has calls in flight, another loop (another thread) uses its own timers."""
    import threading
    rt = make("nap", timeout=0.2)
    out = {}

    def other():
        loop = asyncio.new_event_loop()
        try:
            out["other"] = loop.run_until_complete(timed(rt, {"sleep": 5}))
        finally:
            loop.close()

    async def go():
        first = asyncio.ensure_future(timed(rt, {"sleep": 5}))
        await asyncio.sleep(0.02)
        t = threading.Thread(target=other)
        t.start()
        res = await first
        while t.is_alive():
            await asyncio.sleep(0.01)
        return res

    loop = asyncio.new_event_loop()
    try:
        res, took = loop.run_until_complete(go())
    finally:
        loop.close()
    assert timed_out(res) and took < 0.6
    res2, took2 = out["other"]
    assert timed_out(res2) and 0.18 <= took2 < 0.6


def test_staggered_thread_calls_each_time_out_at_their_own_deadline(run, make):
    rt = make("sync_nap", mode="thread", timeout=0.2)

    async def go():
        a = asyncio.ensure_future(timed(rt, {"sleep": 0.6}))
        await asyncio.sleep(0.1)
        b = asyncio.ensure_future(timed(rt, {"sleep": 0.6}))
        ok = await rt.invoke({"n": 1}, "ok")
        ra, rb = await a, await b
        await asyncio.sleep(0.7)           # the threads end; their slots come back
        return ra, rb, ok

    (ra, ta), (rb, tb), ok = run(go())
    assert timed_out(ra) and timed_out(rb) and 0.18 <= ta < 0.55 and 0.18 <= tb < 0.55
    assert ok.value["n"] == 1
    assert rt._wakes.active == {} and rt.limiter.free == 8


# ------------------------------------------------------------------------------ invoke_now

def test_invoke_now_only_when_nothing_to_wait_for(run, make):
    loop_rt = make("sync_nap", mode="loop", concurrency=1)
    thread_rt = make("sync_nap", mode="thread")
    async_rt = make("nap")

    async def go():
        assert loop_rt.invoke_now({}, "r") is None          # not loaded yet
        await loop_rt.invoke({}, "r0")
        loop_rt.limiter.free = 0                             # no free slot
        none_free = loop_rt.invoke_now({}, "r")
        loop_rt.limiter.free = 1
        await thread_rt.invoke({}, "r0")
        await async_rt.invoke({}, "r0")
        return none_free, thread_rt.invoke_now({}, "r"), async_rt.invoke_now({}, "r")

    assert run(go()) == (None, None, None)
    assert loop_rt.limiter.free == 1


@pytest.mark.parametrize("event", [{"n": 1}, {"n": 2, "fail": True}, {"n": 3, "say": "hello"}])
def test_invoke_now_answers_as_invoke(run, make, event):
    rt = make("sync_nap", mode="loop")

    async def go():
        await rt.invoke({}, "warm")
        return await rt.invoke(dict(event), "rid-a"), rt.invoke_now(dict(event), "rid-a")

    a, b = run(go())
    assert a.error == b.error and a.request_id == b.request_id == "rid-a"
    if a.error:
        assert {k: v for k, v in a.value.items() if k != "stackTrace"} == \
               {k: v for k, v in b.value.items() if k != "stackTrace"}
        assert len(a.value["stackTrace"]) == len(b.value["stackTrace"]) == 1
    else:
        assert a.value == b.value == {"n": event["n"], "left": True, "fn": rt.spec.name, "mem": "128",
                                      "group": "/aws/lambda/" + rt.spec.name, "rid": "rid-a"}

    def shape(log):       # the block without the measured numbers
        return [line.split("\t")[0] if line.startswith("REPORT") else line for line in log.splitlines()]
    assert shape(a.log) == shape(b.log)
    assert a.log.startswith("START RequestId: rid-a Version: $LATEST\n")
    assert rt.limiter.free == 8


def test_context_is_a_lambda_context(run, make):
    from proxy.functions.worker import LambdaContext
    rt = make("sync_nap", mode="loop")
    seen = []
    rt_fn = None

    async def go():
        nonlocal rt_fn
        await rt.invoke({}, "warm")
        rt_fn = rt._fn
        rt._fn = lambda event, ctx: seen.append(ctx) or {}
        await rt.invoke({}, "rid-c", identity={"cognitoIdentityId": "id-1"})

    run(go())
    ctx = seen[0]
    assert isinstance(ctx, LambdaContext) and type(ctx).__name__ == "LambdaContext"
    assert repr(ctx) == ("LambdaContext([aws_request_id=rid-c,function_name="
                         f"{rt.spec.name},function_version=$LATEST])")
    assert ctx.identity.cognito_identity_id == "id-1" and ctx.client_context is None
    assert ctx.invoked_function_arn == rt.spec.arn and ctx.tenant_id is None
    ctx.aws_request_id = "changed"          # writable, as before
    with pytest.raises(AttributeError):
        ctx.not_an_attribute = 1            # (slots, as before)
