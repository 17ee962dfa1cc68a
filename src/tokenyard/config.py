"""Typed settings for every tokenyard service, loaded from YAML, environment and flags.

Precedence, highest first: command-line flags, environment variables `TOKENYARD_<SECTION>__<KEY>`,
the YAML file (`--config` or `TOKENYARD_CONFIG`), then the defaults below. Secrets (the cluster
token) come from the environment or a file, never from a flag. See docs/configuration.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from tokenyard.errors import ConfigError
from tokenyard.governance.billing import BillingConfig
from tokenyard.governance.config import AuthConfig
from tokenyard.governance.metering_config import LogsConfig, MeteringConfig
from tokenyard.governance.networks import normalise_networks
from tokenyard.governance.wordlists import FilterConfig
from tokenyard.observability.settings import LoggingConfig, MetricsConfig, TracingConfig
from tokenyard.protocol.internal import DispatchPolicy
from tokenyard.store.config import DatabaseConfig

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
DEFAULT_CONTROLLER_URL = "http://127.0.0.1:21001"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterConfig(_Section):
    token: SecretStr | None = Field(
        default=None,
        description="shared secret between controller, workers and gateway; without it the control "
        "plane accepts loopback peers only",
    )
    token_file: Path | None = Field(default=None, description="read the token from this file instead")

    def secret(self) -> str | None:
        """The token's value, from `token` or `token_file`."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cluster.token_file: cannot read {self.token_file}: {exc}") from exc
        return None


class ControllerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=21001, ge=1, le=65535)
    dispatch: DispatchPolicy = DispatchPolicy.SHORTEST_QUEUE
    expiry_intervals: float = Field(
        default=3.0, gt=0, description="a worker silent for this many of its heartbeat intervals is evicted"
    )
    startup_grace: float = Field(
        default=5.0,
        ge=0,
        description="seconds after start during which an unknown model means 'not heard from yet', not 404",
    )


class WorkerConfig(_Section):
    model: str = DEFAULT_CHAT_MODEL
    model_names: list[str] = Field(default_factory=list, description="aliases; default: the model's name")
    controller: str = DEFAULT_CONTROLLER_URL
    host: str = "127.0.0.1"
    port: int = Field(default=21002, ge=1, le=65535)
    advertise_address: str | None = Field(
        default=None, description="URL the gateway should use; default http://HOST:PORT"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    quantization: Literal["auto", "none", "int8", "int4", "gguf"] = Field(
        default="auto",
        description="auto: a GGUF's own precision on CPUs with the native kernels, else none; "
        "gguf: the converted GGUF file's own blocks",
    )
    max_batch_size: int | None = Field(
        default=None, ge=1, description="sequences running at once; default: from the machine (64 on 2 CPU cores)"
    )
    batch_wait_timeout: float = Field(default=0.1, ge=0, description="seconds")
    context_length: int | None = Field(default=None, ge=16, description="default: the model's own")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    kv_cache_memory: float | None = Field(
        default=None, gt=0, description="GiB for the KV cache; default: gpu_memory_utilization on CUDA, capped on CPU"
    )
    enforce_eager: bool = Field(default=False, description="CUDA: run decode steps eagerly, without CUDA graphs")
    heartbeat_interval: float = Field(default=2.0, gt=0, description="seconds")
    tenants: list[str] = Field(
        default_factory=list, description="serve only these tenants' requests; empty: shared by every tenant"
    )
    drain_timeout: float = Field(default=30.0, ge=0, description="seconds to finish work on SIGTERM")
    max_queue_length: int = Field(default=256, ge=1, description="requests beyond this are refused (429)")
    stuck_timeout: float = Field(
        default=30.0, gt=0, description="seconds without engine progress, with work queued, before unhealthy"
    )
    embedding_cache_size: int = Field(
        default=10_000,
        ge=0,
        description="embedding workers: inputs whose vectors an LRU cache keeps (by token ids); 0 turns it off",
    )

    def address(self) -> str:
        return self.advertise_address or f"http://{self.host}:{self.port}"


class GatewayConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    controller: str = DEFAULT_CONTROLLER_URL
    request_timeout: float = Field(default=600.0, gt=0, description="seconds for one whole request")
    models_cache_ttl: float = Field(default=0.5, ge=0, description="seconds the model list is cached")
    stall_timeout: float = Field(
        default=10.0, gt=2, description="seconds of silence from a worker's stream before it counts as frozen"
    )
    max_attempts: int = Field(
        default=3, ge=1, description="workers tried for one request that fails before its first token"
    )
    drain_timeout: float = Field(
        default=30.0, ge=0, description="seconds in-flight requests get to finish after SIGTERM"
    )


class ServeConfig(_Section):
    """What `tokenyard serve` starts besides the controller and the gateway."""

    embedding_model: str | None = DEFAULT_EMBEDDING_MODEL
    embedding_port: int = Field(default=21003, ge=1, le=65535)
    restart_backoff: float = Field(default=1.0, gt=0, description="seconds before restarting a child")


class RedisConfig(_Section):
    url: str | None = Field(
        default=None, description="redis://HOST:PORT/DB to share limits, quotas and revocations across gateways"
    )
    key_prefix: str = Field(default="tokenyard:", description="prefix of every key tokenyard writes in Redis")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOKENYARD_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    home: Path = Field(default=Path("~/.tokenyard"), description="data directory: converted models, state")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    metering: MeteringConfig = Field(default_factory=MeteringConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    ip_allowlist: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed to reach the gateway (all but /health and /ready); empty: everyone",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs of proxies whose X-Forwarded-For is believed"
    )
    admin_key: SecretStr | None = Field(
        default=None, description="bearer key for /admin (TOKENYARD_ADMIN_KEY); no key: the admin API is closed"
    )

    @field_validator("ip_allowlist", "trusted_proxies")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return normalise_networks(values)

    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls), file_secret_settings)

    def home_dir(self) -> Path:
        return self.home.expanduser()

    def admin_secret(self) -> str | None:
        """The admin key's value (TOKENYARD_ADMIN_KEY), or None when none is set."""
        return self.admin_key.get_secret_value() if self.admin_key is not None else None

    def metering_on(self) -> bool:
        """Usage records and quotas: asked for, or implied by auth or conversation logs."""
        return self.metering.enabled or self.auth.enabled or self.logs.enabled

    def database_url(self) -> str:
        return self.database.resolved_url(self.home_dir())


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from the YAML file, the environment and flag overrides (nested dicts).

    Raises ConfigError with a one-line message naming the bad key.
    """
    path = config_file or os.environ.get("TOKENYARD_CONFIG") or None
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"--config: no such file: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    try:
        return _FromFile(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"config key {key}: {first['msg']}") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # unreadable or malformed YAML
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{where}: {problem}") from None
