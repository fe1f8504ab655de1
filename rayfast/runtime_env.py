"""runtime_env: the environment a job's, a task's or an actor's code runs in (Ray's option).

rayfast applies `env_vars` (set in the worker for the task, `${VAR}` expanded
from the worker's environment, as Ray does), `working_dir` (a local
directory given to `init()`: tasks run with it as their current directory and
first on sys.path; Ray uploads a copy, rayfast runs in place) and `py_modules`
(local packages, modules or .zip/.whl files, or imported module objects,
given to `init()`: importable in tasks by their own names, from where they
are). `worker_process_setup_hook` (a function, or a "module.function" path, given to
`init()`) is called once in each worker process before the first of the job's
tasks or actors runs there, as Ray's. `config` and `excludes` are accepted.
Every other field (pip, conda, container, ...) would need rayfast to build
environments, which it does not: it is refused at the call site rather than
ignored. `RuntimeEnv` and `RuntimeEnvConfig` are Ray's typed forms of the dict
and of its `config`.

Inheritance follows Ray: a task or actor without a runtime_env of its own runs
in its parent's (the job's for the driver's calls); one that has its own gets
the parent's `env_vars` merged under its own, and its other fields replace the
parent's.
"""
from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager

_ACCEPTED = {"env_vars", "working_dir", "py_modules", "config", "excludes", "worker_process_setup_hook"}
LOGGING_KEY = "_logging_config"   # the job's LoggingConfig (not a user field: runtime_context hides it)
LIFETIME_KEY = "_default_actor_lifetime"   # the job's JobConfig.default_actor_lifetime, likewise
SETUP_HOOK_KEY = "_setup_hook"   # worker_process_setup_hook: its pickle, or its "module.function" path
_VAR = re.compile(r"\$\{([^}]*)\}")


class RuntimeEnv(dict):
    """Ray's typed runtime_env (`from ray.runtime_env import RuntimeEnv`): the dict of the fields
    given, None ones left out; checked where it is used, as a plain dict is."""

    def __init__(self, *, py_modules=None, working_dir=None, pip=None, conda=None, container=None,
                 env_vars=None, worker_process_setup_hook=None, config=None, **kwargs):
        super().__init__(kwargs)
        fields = (("py_modules", py_modules), ("working_dir", working_dir), ("pip", pip), ("conda", conda),
                  ("container", container), ("env_vars", env_vars),
                  ("worker_process_setup_hook", worker_process_setup_hook), ("config", config))
        self.update((k, v) for k, v in fields if v is not None)

    def to_dict(self):
        return dict(self)


class RuntimeEnvConfig(dict):
    """Ray's runtime_env `config` (setup_timeout_seconds, eager_install, log_files): checked as
    Ray checks it, then accepted; rayfast builds no environments for it to time."""

    def __init__(self, setup_timeout_seconds=600, eager_install=True, log_files=None):
        super().__init__()
        if not isinstance(setup_timeout_seconds, int):
            raise TypeError(f"setup_timeout_seconds must be of type int, got: {type(setup_timeout_seconds)}")
        if setup_timeout_seconds <= 0 and setup_timeout_seconds != -1:
            raise ValueError(f"setup_timeout_seconds must be greater than zero or equals to -1, got: "
                             f"{setup_timeout_seconds}")
        if not isinstance(eager_install, bool):
            raise TypeError(f"eager_install must be a boolean. got {type(eager_install)}")
        if log_files is not None and (not isinstance(log_files, list)
                                      or not all(isinstance(f, str) for f in log_files)):
            raise TypeError(f"log_files must be a list of strings or None, got {log_files!r}")
        self.update(setup_timeout_seconds=setup_timeout_seconds, eager_install=eager_install,
                    log_files=log_files or [])


def validate(env, job_level=False):
    """The checked runtime_env as a plain dict (None when empty); raises at the call site."""
    if env is None:
        return None
    if not isinstance(env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(env).__name__}")
    unsupported = sorted(set(env) - _ACCEPTED)
    if unsupported:
        raise NotImplementedError(
            f"runtime_env field(s) {unsupported} are not supported by rayfast (it does not build "
            f"environments); supported: {sorted(_ACCEPTED)}. Install such dependencies on the machine.")
    out = {}
    env_vars = env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
            raise TypeError(f"runtime_env['env_vars'] must be a dict of str -> str, got {env_vars!r}")
        if env_vars:
            out["env_vars"] = dict(env_vars)
    wd = env.get("working_dir")
    if wd is not None:
        wd = _local_path(wd, "working_dir", job_level)
        if not os.path.isdir(wd):
            raise ValueError(f"runtime_env working_dir {wd!r} is not an existing directory")
        out["working_dir"] = wd
    modules = env.get("py_modules")
    if modules is not None:
        if not isinstance(modules, (list, tuple)):
            raise TypeError(f"runtime_env['py_modules'] must be a list of paths or modules, got "
                            f"{type(modules).__name__}")
        paths = [_import_root(m, job_level) for m in modules]
        if paths:
            out["py_modules"] = list(dict.fromkeys(paths))
    hook = env.get("worker_process_setup_hook")
    if hook is not None:
        if not job_level:   # as Ray: the job's workers run it as they start, so only init() takes it
            raise ValueError("worker_process_setup_hook can only be given to init()'s runtime_env, "
                             "not to a task's or an actor's")
        if isinstance(hook, str):
            out[SETUP_HOOK_KEY] = hook
        elif callable(hook):
            from rayfast import serialization
            out[SETUP_HOOK_KEY] = serialization.dumps_function(hook)
        else:
            raise TypeError(f"worker_process_setup_hook must be a function, got {type(hook)}.")
    return out or None


def _local_path(p, field, job_level):
    """A local path of a runtime_env field, made absolute."""
    if not isinstance(p, (str, os.PathLike)):
        raise TypeError(f"runtime_env['{field}'] must hold paths, got {type(p).__name__}")
    p = os.fspath(p)
    if "://" in p:
        raise NotImplementedError(f"runtime_env {field} {p!r}: remote URIs are not supported by rayfast; "
                                  f"give init() a local path")
    if not job_level:
        # Ray too takes local paths only for the job (init), not per task or actor
        raise ValueError(f"{p} is not a valid URI: a local {field} can only be given to init()'s "
                         f"runtime_env, not to a task's or an actor's")
    return os.path.abspath(p)


def _import_root(module, job_level):
    """The sys.path entry that makes a py_modules item importable by its own name: a zip or
    wheel itself, else the directory holding the package or module."""
    if isinstance(module, type(os)):   # an imported module object
        paths = getattr(module, "__path__", None)
        where = list(paths)[0] if paths else getattr(module, "__file__", None)
        if not where:
            raise ValueError(f"runtime_env py_modules: module {module.__name__!r} has no file to import from")
        module = where
    p = _local_path(module, "py_modules", job_level)
    if not os.path.exists(p):
        raise ValueError(f"runtime_env py_modules entry {p!r} does not exist")
    if os.path.isfile(p) and p.endswith((".zip", ".whl")):
        return p
    if os.path.isfile(p) and not p.endswith(".py"):
        raise ValueError(f"runtime_env py_modules entry {p!r} is not a package directory, a .py module "
                         f"or a .zip/.whl file")
    return os.path.dirname(p.rstrip(os.sep))


def merge(parent, own):
    """What a call runs in: own (validated) over parent (see the module doc)."""
    if not parent:
        return own
    if not own:
        return parent
    out = dict(parent)
    out.update(own)
    if "env_vars" in parent and "env_vars" in own:
        out["env_vars"] = {**parent["env_vars"], **own["env_vars"]}
    return out


def inherit(extras, parent):
    """A spec's S_OPTIONS with the runtime_env its call runs in, given the caller's (parent)."""
    own = extras.get("runtime_env") if extras else None
    return dict(extras or {}, runtime_env=merge(parent, own))


def enter(env):
    """Make this process run in env (an actor's process, for its life); returns what it replaced.
    The job's logging config, if any, rides along (rayfast/logging_config.py): set up once, kept."""
    logging = env.get(LOGGING_KEY)
    if logging is not None:
        from rayfast.logging_config import configure
        configure(logging)
    saved_vars = {}
    for k, v in env.get("env_vars", {}).items():
        saved_vars[k] = os.environ.get(k)
        os.environ[k] = _VAR.sub(lambda m: os.environ.get(m.group(1), ""), v)
    wd = env.get("working_dir")
    cwd = None
    if wd is not None:
        cwd = os.getcwd()
        os.chdir(wd)
        sys.path.insert(0, wd)
    added = [p for p in env.get("py_modules", ()) if p not in sys.path]
    sys.path[:0] = added
    state = saved_vars, wd, cwd, added
    hook = env.get(SETUP_HOOK_KEY)
    if hook is not None and hook not in _hooks_run:
        try:   # last: a hook may import from the working_dir or py_modules
            _run_setup_hook(hook)
        except BaseException:
            _restore(state)
            raise
        _hooks_run.add(hook)
    return state


_hooks_run = set()   # the setup hooks this process has run (a failed one runs again with the next task)


def _run_setup_hook(hook):
    if isinstance(hook, str):
        import importlib
        module, _, name = hook.rpartition(".")
        if not module:
            raise ValueError(f"worker_process_setup_hook {hook!r} must be a 'module.function' path")
        fn = getattr(importlib.import_module(module), name)
    else:
        from rayfast import serialization
        fn = serialization.loads_inline(hook)
    fn()


def _restore(state):
    saved_vars, wd, cwd, added = state
    if wd is not None:
        os.chdir(cwd)
    for p in added + ([wd] if wd is not None else []):
        try:
            sys.path.remove(p)
        except ValueError:
            pass
    for k, v in saved_vars.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextmanager
def applied(env):
    """Run the body in env (this process's environment, put back afterwards)."""
    state = enter(env)
    try:
        yield
    finally:
        _restore(state)
