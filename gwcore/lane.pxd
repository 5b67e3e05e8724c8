# Declarations that turn gwcore/lane.py into C types when Cython compiles it (pure-Python
# mode: the .py stays the source and, uncompiled, the twin). Keep in step with lane.py.

cimport cython

from gwcore._clock cimport monotonic_ns as _now_ns
from gwcore.h1scan cimport lane_head as _lane_head, relay as _relay_answer
from gwcore.reqid cimport new_request_id as _new_request_id
from gwcore.ratelimit cimport Check as _Check

from gwcore.h1client cimport Connection, UpstreamPool, UpstreamResponse
from gwcore.http1 cimport Exchange, LaneBase, _Clock


cdef _Clock _CLOCK


cdef class Plan:
    cdef public object pool_of
    cdef public UpstreamPool pool
    cdef public tuple checks
    cdef public double timeout
    cdef public str host_header
    cdef public bint pass_host
    cdef public str fwd_port
    cdef public str fixed_query
    cdef public str rid_header
    cdef public bytes rid_line
    cdef public object start
    cdef public object on_upstream
    cdef public object make_request
    cdef public object serve
    cdef public object log


cdef class Lane(LaneBase):
    cdef public Plan plan
    cdef public str path
    cdef public str framing
    cdef public bint is_head
    cdef public bint idempotent

    @cython.locals(plan=Plan, pool=UpstreamPool, c=_Check, q=str, fq=str, host=str, raw=object,
                   head=object, sent=bint)
    cpdef object forward(self, Exchange ex, str peer)


@cython.locals(lane=Lane, plan=Plan, status=int, headers=list)
cpdef _answered(Exchange ex, UpstreamResponse resp, object exc, object retry)


@cython.locals(ex=Exchange, lane=Lane, r=tuple)
cpdef bint _relay(Connection conn, bytes data)


cpdef object _start_ns(Exchange ex)


@cython.locals(lane=Lane, log_line=object)
cpdef _done(Exchange ex, int status)
