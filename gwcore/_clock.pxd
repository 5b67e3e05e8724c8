# The monotonic clock read in C, for the compiled modules that cimport it: CLOCK_MONOTONIC,
# the clock behind time.monotonic(), time.perf_counter() and the event loops' time() (uvloop
# reads it too, cached once per loop pass), so values mix with theirs. A Python call, a float
# object and its release cost more than the read itself on the request path. The uncompiled
# twins bind the same names to time.monotonic (both seconds) and time.perf_counter_ns.

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE


cdef inline double monotonic_now() noexcept nogil:
    """Seconds, as time.monotonic() gives them."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline long long monotonic_ns() noexcept nogil:
    """Nanoseconds, as time.perf_counter_ns() gives them on Linux."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline double monotonic_coarse() noexcept nogil:
    """Seconds on the same clock, as of the last timer tick (a few ms behind at most):
    several times cheaper, for marks that only need to know idle seconds."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9
