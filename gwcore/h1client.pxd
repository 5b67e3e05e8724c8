# Declarations that turn gwcore/h1client.py into C types when Cython compiles it (pure-Python
# mode: the .py stays the source and, uncompiled, the twin). Keep in step with h1client.py.

cimport cython

from gwcore._clock cimport monotonic_now as _now, monotonic_coarse as _now_coarse

cdef class _Body:
    cdef public Connection _conn
    cdef public object _chunks
    cdef public Py_ssize_t _buffered
    cdef public bint _done
    cdef public object _exc
    cdef public object _waiter
    cdef public double _read_timeout
    cdef public object _loop

    cpdef bytes _take(self)
    cpdef _on_read_timeout(self)
    cpdef _wake(self)
    cpdef _abort(self)


cdef class UpstreamResponse:
    cdef public int status
    cdef public list headers
    cdef public str http_version
    cdef public object content_length
    cdef public bint chunked
    cdef public bint keep_alive
    cdef public bint _has_body
    cdef public _Body _b
    cdef public list _fwd
    cdef public object _named
    cdef public object block
    cdef public bint block_date

    cpdef bint has_body(self)
    cpdef list forward_headers(self)
    cpdef object body_now(self)


cdef class Connection:
    cdef public UpstreamPool pool
    cdef public object loop
    cdef public object transport
    cdef public object _twrite
    cdef public object parser
    cdef public int state
    cdef public long requests
    cdef public double idle_since
    cdef public bint _slot
    cdef public object _exc
    cdef public UpstreamResponse _resp
    cdef public _Body _body
    cdef public object _head_waiter
    cdef public object _drain_waiter
    cdef public bint _write_paused
    cdef public bint _reading_paused
    cdef public bint _is_head
    cdef public bint _in_head
    cdef public bint _head_done
    cdef public bint _request_done
    cdef public bint _response_started
    cdef public bint _keep
    cdef public bint _until_close
    cdef public int _after_feed
    cdef public bint _conn_close_tok
    cdef public bint _conn_keep_tok
    cdef public object _stream_task
    cdef public bint _in_iter
    cdef public bint body_pulled
    cdef public object _timer
    cdef public double _timer_at
    cdef public double _deadline
    cdef public object _cb
    cdef public object _cb_arg
    cdef public UpstreamResponse _cb_resp
    cdef public bint _cb_idem
    cdef public bint _deliver
    cdef public bint _block
    cdef public bint _relay
    cdef public double _read_timeout

    @cython.locals(n=Py_ssize_t, k=str, v=str)
    cpdef on_header(self, bytes name, bytes value)
    cpdef on_body(self, bytes data)
    cpdef _scanned(self, tuple r, bytes data)
    cpdef _wake_writer(self)
    cpdef _finish_message(self, bint replace_parser)
    cpdef _resume_reading(self)
    cpdef _wake_all(self)
    cpdef _fail(self, object exc)
    cpdef _close(self)
    cpdef _arm(self, double deadline)
    cpdef _disarm(self)
    cpdef _on_timer(self)
    cpdef _call_back(self)
    cpdef UpstreamResponse _new_request(self, bint is_head, double read_timeout, bint request_done)
    cpdef _request_state(self, bint is_head, bint request_done)
    cpdef _materialize(self)
    cpdef _relayed(self, bint keep)
    cpdef start(self, bytes head, bint is_head, bint idempotent, double deadline,
                double read_timeout, object cb, object arg, bint block, bint relay=*)


cdef class UpstreamPool:
    cdef public object host
    cdef public object port
    cdef public object unix_path
    cdef public object settings
    cdef public object source_address
    cdef public object _loop
    cdef public list _idle
    cdef public Py_ssize_t _open
    cdef public Py_ssize_t _in_use
    cdef public object _waiters
    cdef public bint _closed
    cdef public object _sweeper
    cdef public set _conns
    cdef public double _idle_timeout
    cdef public Py_ssize_t _max_idle

    cpdef bint ready(self)

    @cython.locals(conn=Connection)
    cpdef Connection _take_idle(self, double now)
    cpdef bint start(self, str method, str target, list headers, double timeout, object cb,
                     object arg)
    cpdef bint start_head(self, bytes head, str method, double timeout, object cb, object arg,
                          bint block, bint relay=*)
    @cython.locals(now=double, conn=Connection)
    cpdef bint start_taken(self, bytes head, bint is_head, bint idempotent, double timeout,
                           object cb, object arg, bint block, bint relay)
    cpdef _waiter_timeout(self, object fut)
    cpdef _connect_failed(self, Connection conn)
    cpdef _release(self, Connection conn)
    cpdef _discard(self, Connection conn, int prev)
    cpdef _slot_freed(self)
    cpdef _sweep(self)


@cython.locals(toks=set, t=str)
cpdef object connection_tokens(object headers)
@cython.locals(named=object, out=list, drop=frozenset, lk=str)
cpdef list strip_response(object headers)
@cython.locals(named=object, drop=frozenset, keep_xff=bint, out=list)
cpdef list outgoing_headers(object headers, str host_value, str peer_ip, str scheme, str fwd_port)
@cython.locals(lines=str, parts=list, count=Py_ssize_t)
cpdef bytes encode_head(str method, str target, list headers, str framing)
cpdef str body_framing(str method)
