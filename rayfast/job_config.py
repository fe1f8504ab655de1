"""Ray's JobConfig: job-wide settings given to init(job_config=...).

rayfast runs Python only, so the cross-language settings (jvm_options,
code_search_path) are refused rather than ignored; the rest apply as in Ray:
runtime_env and ray_namespace are the job's unless init() gives its own,
default_actor_lifetime is the lifetime of the job's actors that name none
(it rides in the job's runtime_env, as the logging config does),
and metadata is kept for the caller.
"""
import json

_LIFETIMES = ("detached", "non_detached")


class JobConfig:
    def __init__(self, jvm_options=None, code_search_path=None, runtime_env=None, _client_job=False,
                 metadata=None, ray_namespace=None, default_actor_lifetime="non_detached",
                 _py_driver_sys_path=None):
        if jvm_options:
            raise ValueError("JobConfig(jvm_options=...) is for Java workers; rayfast runs Python only")
        if code_search_path:
            raise ValueError("JobConfig(code_search_path=...) is for cross-language jobs; rayfast runs Python "
                             "only (put the directories on PYTHONPATH, or use runtime_env={'py_modules': [...]})")
        self.jvm_options = []
        self.code_search_path = []
        self.metadata = {}
        self.runtime_env = None
        self.ray_namespace = None
        self.default_actor_lifetime = "non_detached"
        self.py_logging_config = None
        self._py_driver_sys_path = list(_py_driver_sys_path or [])
        for k, v in (metadata or {}).items():
            self.set_metadata(k, v)
        self.set_runtime_env(runtime_env)
        self.set_ray_namespace(ray_namespace)
        self.set_default_actor_lifetime(default_actor_lifetime)

    def set_metadata(self, key, value):
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"JobConfig metadata must map str to str, got {key!r}: {value!r}")
        self.metadata[key] = value

    def set_runtime_env(self, runtime_env, validate=False):
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
        if validate and runtime_env is not None:
            from rayfast import runtime_env as renv
            renv.validate(runtime_env, job_level=True)
        self.runtime_env = None if runtime_env is None else dict(runtime_env)

    def set_ray_namespace(self, ray_namespace):
        if ray_namespace is not None and not isinstance(ray_namespace, str):
            raise TypeError(f"ray_namespace must be a string, got {type(ray_namespace).__name__}")
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime):
        if default_actor_lifetime not in _LIFETIMES:
            raise ValueError(f"Default actor lifetime must be one of {list(_LIFETIMES)}, "
                             f"got {default_actor_lifetime!r}")
        self.default_actor_lifetime = default_actor_lifetime

    def set_py_logging_config(self, logging_config=None):
        self.py_logging_config = logging_config

    @classmethod
    def from_json(cls, job_config_json):
        """A JobConfig from a dict (or its JSON text) of its constructor's arguments."""
        if isinstance(job_config_json, str):
            job_config_json = json.loads(job_config_json)
        return cls(**job_config_json)
