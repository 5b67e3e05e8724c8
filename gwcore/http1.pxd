# Declarations that turn gwcore/http1.py into C types when Cython compiles it (pure-Python
# mode: the .py stays the source and, uncompiled, the twin). Keep in step with http1.py.

cimport cython

from gwcore._clock cimport monotonic_coarse as _now_coarse
from gwcore.h1scan cimport scan_lane as _scan_lane

@cython.locals(parts=list, date=bytes, n=Py_ssize_t, count=Py_ssize_t, block=str, lk=str)
cpdef bytes encode_head(int status, object headers, str framing, bint keep_alive)


cdef class _Clock:
    cdef public bytes date
    cdef public object _sec


cdef class LaneBase:
    cdef public str method
    cdef public str client_path
    cdef public str client_host

    cpdef object forward(self, Exchange ex, str peer)


cdef class Exchange:
    cdef public Connection conn
    cdef public str method
    cdef public object path
    cdef public str query
    cdef public list headers
    cdef public str http_version
    cdef public str host
    cdef public bint keep_alive
    cdef public bint expect_continue
    cdef public object _chunks
    cdef public Py_ssize_t _buffered
    cdef public bint _complete
    cdef public object _waiter
    cdef public bint started
    cdef public bint head
    cdef public int _mode
    cdef public long long _sent
    cdef public long long _declared
    cdef public bint done
    cdef public int reject
    cdef public object raw
    cdef public LaneBase lane
    cdef public str rid
    cdef public object start_ns

    cpdef unpack(self)

    @cython.locals(keep=bint, head=tuple)
    cpdef response_lines(self, int status, tuple lines, bint has_date, bytes body)
    cpdef _feed(self, object data)
    cpdef _finish_body(self)
    cpdef _fail(self)
    cpdef bint _bodyless(self, int status)
    cpdef bint _end(self)
    cpdef complete(self)
    cpdef continue_with(self, object aw)


cdef class Connection:
    cdef public FrontendServer server
    cdef public object app
    cdef public object loop
    cdef public object transport
    cdef public object parser
    cdef public str peer
    cdef public bint closed
    cdef public Exchange current
    cdef public Exchange parsing
    cdef public object queue
    cdef public bytes url
    cdef public Py_ssize_t header_bytes
    cdef public bint read_paused
    cdef public bint write_paused
    cdef public object _drain_waiter
    cdef public double idle_since
    cdef public bint in_headers
    cdef public object task
    cdef public bint lingering
    cdef public Py_ssize_t _discard
    cdef public Py_ssize_t max_header
    cdef public Py_ssize_t head_bytes
    cdef public object pending_reject
    cdef public object _next
    cdef public Exchange _handoff
    cdef public bint _pumping
    cdef public bint eof
    cdef public dict lanes
    cdef public object _twrite

    cpdef Exchange _whole(self, str method, object path, str host, bint keep)
    cpdef _scanned(self, tuple r)
    cpdef _laned(self, LaneBase lane, bint keep, bytes data)
    cpdef _pause_reading(self)
    cpdef _resume_reading(self)
    cpdef _pause_body(self)
    cpdef _resume_body(self)
    cpdef _write(self, object data)
    cpdef bint _keep(self, Exchange ex)
    cpdef _start(self, Exchange ex)
    @cython.locals(lane=LaneBase)
    cpdef object _dispatch(self, Exchange ex)
    cpdef _complete(self, Exchange ex)
    cpdef _await(self, Exchange ex, object aw)
    cpdef _pump(self)
    cpdef _answer_plain(self, Exchange ex, int status, str message)
    cpdef _finished(self, Exchange ex, bint ok)
    cpdef _linger(self)
    cpdef _reject(self, int status, str message)
    cpdef _send_reject(self, int status, str message)


cdef class FrontendServer:
    cdef public object app
    cdef public object loop
    cdef public Py_ssize_t max_header_bytes
    cdef public double keepalive_timeout
    cdef public double header_timeout
    cdef public set connections
    cdef public bint draining
    cdef public object server
    cdef public object _sweeper
