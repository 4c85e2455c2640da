"""Settings: one object, built by create_app() or the CLI and passed down (never a module global).

Every field can be set by an environment variable ``EDGEMINER_<FIELD>`` (lists as JSON or comma-separated),
and the CLI's options override them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edgeminer.indexer.roots import is_remote_uri

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEMINER_", extra="ignore")

    data_dir: str = Field(
        "./edgeminer-data",
        description="LanceDB URI: a local directory or object storage (s3://bucket/prefix; endpoint and keys from "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, or EDGEMINER_STORAGE_OPTIONS as JSON)",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = Field(None, description="when set, every write needs header X-API-Key")
    api_key_for_reads: bool = Field(False, description="require the API key for reads too")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="host names (the Host header) the server answers to, besides the loopback names "
        "(127.0.0.1, localhost, ::1) and the --host name, which are always accepted; '*' accepts any name "
        "(unsafe: a web page can then reach the server through DNS rebinding)",
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=0,
        description="largest request body in bytes, refused with 413 before it is read (0: no limit); "
        "the default admits a 20 MB image sent base64 in JSON",
    )
    media_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="folders media may be served from, besides the folders each dataset was ingested from",
    )
    ingest_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="folders API requests may name server paths under (ingest sources, image roots, vectors, "
        "model files); empty: every such request is refused (403). Uploads and the CLI are not limited",
    )
    allow_url_fetch: bool = Field(False, description="allow http(s) image URIs (never private addresses)")
    media_base_url: str | None = Field(None, description="base URL exports use to reference media")
    label_studio_url: str | None = Field(
        None,
        description="a running Label Studio server (http(s) base URL) the API pushes tasks to and pulls labels "
        "from; the API uses only this one (the CLI may name another with --to-server / --from-server)",
    )
    label_studio_token: SecretStr | None = Field(
        None, description="that server's API token (sent as 'Authorization: Token ...'; never logged or stored)"
    )
    ui_dir: str = str(UI_DIR)
    cache_dir: str | None = Field(
        None,
        description="thumbnail cache (default <data_dir>/_cache); for data on object storage, the local folder of "
        "thumbnails and exports (default ~/.cache/edgeminer/<hash of data_dir>, or EDGEMINER_CACHE_DIR)",
    )
    max_budget: int = Field(10_000, description="largest budget a mine or select request may ask for")
    device: str = Field("auto", description="torch device for embedders: auto, cpu, cuda")
    blas_threads: int = Field(
        1,
        ge=0,
        description="BLAS threads in the server (requests run in parallel already; 0 = BLAS's own default)",
    )
    analysis_sample_rows: int = Field(
        50_000,
        ge=16,
        description="analyze fits the map (UMAP) and the clusters (HDBSCAN) on a seeded sample of this many rows "
        "and places every other row from its nearest sampled rows; tables up to this size are fitted whole",
    )

    @field_validator("cors_origins", "media_roots", "allowed_hosts", "ingest_roots", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [v.strip() for v in text.split(",") if v.strip()]
        return value

    @property
    def is_remote(self) -> bool:
        """Whether the data is on object storage (s3://, gs://, az://...), not in a local folder."""
        return is_remote_uri(self.data_dir)

    @property
    def thumbnail_cache(self) -> Path:
        """Thumbnails: ``cache_dir`` or ``<data_dir>/_cache``; for remote data ``<local cache>/thumbnails``."""
        if self.is_remote:
            return local_cache_root(self.data_dir, self.cache_dir) / "thumbnails"
        if self.cache_dir:
            return Path(self.cache_dir)
        return Path(self.data_dir) / "_cache"


#: the environment variable naming the local cache folder of a remote store (the ``cache_dir`` setting)
CACHE_DIR_ENV = "EDGEMINER_CACHE_DIR"


def local_cache_root(data_dir: str, cache_dir: str | None = None) -> Path:
    """The local folder for files a remote store keeps on this machine (thumbnails, export files and zips):
    ``cache_dir``, else ``$EDGEMINER_CACHE_DIR``, else ``~/.cache/edgeminer/<first 16 hex of sha256(data_dir)>``,
    so two buckets (or prefixes) never share a folder."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    digest = hashlib.sha256(str(data_dir).rstrip("/").encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "edgeminer" / digest
