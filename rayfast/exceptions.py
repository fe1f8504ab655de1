"""Exception classes, named and related like Ray's so `except ray.exceptions.X` ports over.

A task failure travels as a pickled RayTaskError; `get` re-raises it as an
instance of a class derived from both RayTaskError and the user's exception
class, so `except ValueError` still catches a ValueError raised remotely.
"""
from __future__ import annotations


class RayError(Exception):
    """Base of every error rayfast raises."""


class RaySystemError(RayError):
    pass


class RayTaskError(RayError):
    """A task or actor method raised; carries the remote traceback."""

    def __init__(self, function_name="<unknown>", traceback_str="", cause=None, pid=None, ip=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.ip = ip
        # Not super(): in a derived RayTaskError(Cause) class that would be the cause's __init__.
        Exception.__init__(self, self._message())

    def _message(self):
        cause = f"{type(self.cause).__name__}" if self.cause is not None else "Error"
        where = f" (pid={self.pid}, ip={self.ip})" if self.pid is not None else ""
        return f"{cause}: task {self.function_name}{where} failed:\n{self.traceback_str}"

    def __reduce__(self):
        return (_rebuild_task_error, (self.function_name, self.traceback_str, self.cause, self.pid, self.ip))

    def __str__(self):
        return self._message()

    def as_instanceof_cause(self):
        """An exception that is both this RayTaskError and an instance of the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(cause_cls, RayTaskError) or not issubclass(cause_cls, Exception) \
                or not _subclassable(cause_cls):
            return self   # (not a KeyboardInterrupt or SystemExit: `except Exception` must catch it)
        derived = _derived_class(cause_cls)
        err = derived.__new__(derived)
        # Bypass the cause class's __init__: its signature is unknown to us.
        RayTaskError.__init__(err, self.function_name, self.traceback_str, self.cause, self.pid, self.ip)
        err.args = self.cause.args if isinstance(self.cause, BaseException) else err.args
        # the cause's own attributes too (e.b of a MyError(a, b) that sets self.b)
        for k, v in getattr(self.cause, "__dict__", {}).items():
            err.__dict__.setdefault(k, v)
        return err


_DERIVED: dict = {}


def _subclassable(cls):
    try:
        probe = type("probe", (RayTaskError, cls), {})
        probe.__new__(probe)   # bases of clashing layouts (KeyError with OSError) fail only here
        return True
    except TypeError:
        return False


def _derived_class(cause_cls):
    derived = _DERIVED.get(cause_cls)
    if derived is None:
        def __str__(self):
            return RayTaskError._message(self)

        derived = type(
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {"__str__": __str__, "__reduce__": RayTaskError.__reduce__, "__module__": __name__},
        )
        _DERIVED[cause_cls] = derived
    return derived


def _rebuild_task_error(function_name, traceback_str, cause, pid, ip):
    return RayTaskError(function_name, traceback_str, cause, pid, ip)


def _new_exception(cls, args, state):
    """An instance of cls without calling its __init__ (whose signature may not match its args)."""
    e = cls.__new__(cls, *args)
    e.args = args
    if state:
        e.__dict__.update(state)
    return e


class PortableCause:
    """Pickles as a copy of exc built by _new_exception: for exceptions that cannot unpickle themselves."""

    def __init__(self, exc):
        self.exc = exc

    def __reduce__(self):
        exc = self.exc
        return (_new_exception, (type(exc), exc.args, dict(getattr(exc, "__dict__", None) or {})))


class WorkerCrashedError(RayError):
    """The worker running the task died and no retries were left."""

    def __init__(self, message="The worker died unexpectedly while executing this task."):
        super().__init__(message)


class RayActorError(RayError):
    """A call could not finish because of its actor: Ray raises the subclasses ActorDiedError
    (dead: died, killed, exited, or failed in its constructor) and ActorUnavailableError."""

    def __init__(self, message="The actor died unexpectedly before finishing this task.", cause=None,
                 actor_id=None):
        self.cause = cause                           # the constructor's error, if that is why
        self.actor_id = actor_id                     # hex, as Ray's
        self.error_msg = message
        self.actor_init_failed = cause is not None
        super().__init__(message)


class ActorDiedError(RayActorError):
    """The actor is dead: every pending and later call fails with this."""


class ActorUnavailableError(RayActorError):
    """The actor cannot be reached for now (it is restarting); the call may or may not have run."""


class TaskCancelledError(RayError):
    def __init__(self, task_id=None):
        self.task_id = task_id
        super().__init__(f"Task {task_id} was cancelled" if task_id else "This task was cancelled")

    def __reduce__(self):
        # the default (cls, args) would pass the message back in as the task id
        return (type(self), (self.task_id,), self.__dict__)


class TaskCancelledWorkerCrashedError(TaskCancelledError, WorkerCrashedError):
    """get() of a task that cancel(force=True) killed while it ran.

    Ray documents WorkerCrashedError for this case and TaskCancelledError for
    cancelled tasks in general; the error is an instance of both, so code
    written against either catches it."""

    def __init__(self, task_id=None):
        TaskCancelledError.__init__(self, task_id)


class GetTimeoutError(RayError, TimeoutError):
    pass


class ObjectLostError(RayError):
    def __init__(self, object_ref_hex="", message=None):
        self.object_ref_hex = object_ref_hex
        super().__init__(message or f"Object {object_ref_hex} is lost and cannot be reconstructed.")

    def __reduce__(self):
        # the default (cls, args) would pass the message back in as the object id
        return (type(self), (self.object_ref_hex, self.args[0] if self.args else None), self.__dict__)


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    pass


class OwnerDiedError(ObjectLostError):
    pass


class ObjectReconstructionFailedError(ObjectLostError):
    pass


class ObjectStoreFullError(RayError):
    pass


class OutOfMemoryError(RayError):
    pass


class RuntimeEnvSetupError(RayError):
    pass


class NodeDiedError(RayError):
    pass


class RaySystemExit(RayError):
    pass


class PendingCallsLimitExceeded(RayError):
    pass


class ObjectFetchTimedOutError(ObjectLostError):
    pass


class ObjectFreedError(ObjectLostError):
    pass


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    pass


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    pass


class LocalRayletDiedError(RayError):
    pass


class TaskUnschedulableError(RayError):
    pass


class ActorUnschedulableError(RayError):
    pass


class TaskPlacementGroupRemovedError(RayError):
    pass


class ActorPlacementGroupRemovedError(RayError):
    pass


# Ray's names for those two
TaskPlacementGroupRemoved = TaskPlacementGroupRemovedError
ActorPlacementGroupRemoved = ActorPlacementGroupRemovedError


class ActorAlreadyExistsError(ValueError, RayError):
    """A named actor's name is taken in its namespace (a ValueError, as Ray's)."""


class ActorHandleNotFoundError(ValueError, RayError):
    pass


class ObjectRefStreamEndOfStreamError(RayError):
    pass


class RpcError(RayError):
    pass


class UnserializableException(RayError):
    pass


class UserCodeException(RayError):
    pass


class AuthenticationError(RayError):
    pass


class CrossLanguageError(RayError):
    pass


class OutOfDiskError(RayError):
    pass


class AsyncioActorExit(RayError):
    pass


class OufOfBandObjectRefSerializationException(RayError):
    """An ObjectRef pickled out of band (rayfast.cloudpickle) while
    RAY_allow_out_of_band_object_ref_serialization=0; Ray's name, typo included."""


class _TypeOrValueError(TypeError, ValueError):
    """A bad argument where Ray raises ValueError and earlier rayfast raised TypeError: both catch it."""
