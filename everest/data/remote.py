"""Datasets on S3: litdata storage options, and a reachability check that fails fast and clearly.

`data.cloud_type` 's3_public' reads anonymously (unsigned requests); 's3' (or null) uses the
usual AWS credential chain (environment, ~/.aws, instance role).
"""

from __future__ import annotations

from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 15
ATTEMPTS = 2


def is_remote(location: str) -> bool:
    return location.startswith("s3://")


def _client_config(cloud_type: str | None):
    import botocore
    from botocore.config import Config

    options = dict(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
    )
    if cloud_type == "s3_public":
        options["signature_version"] = botocore.UNSIGNED
    return Config(**options)


def storage_options(cloud_type: str | None) -> dict:
    """litdata `storage_options` (boto3 client arguments) for `data.cloud_type`."""
    if cloud_type == "s3_public":
        _fetch_chunks_with_boto3()
    return {"config": _client_config(cloud_type)}


def _fetch_chunks_with_boto3() -> None:
    """litdata 0.2.76 fetches chunks through obstore, signing with the credentials of its boto3
    client; an unsigned (anonymous) client has none, so every chunk fetch would fail. litdata
    falls back to its boto3 path, which honours the unsigned config, in processes where obstore
    belongs to another process: say so for this process and its DataLoader workers."""
    from litdata.streaming import downloader

    downloader._OBSTORE_INIT_PID = -1


def check_remote_dataset(url: str, cloud_type: str | None) -> None:
    """Raise a clear error within about CONNECT/READ_TIMEOUT_S x ATTEMPTS seconds when `url`'s
    index.json cannot be read (no network, no credentials, wrong path)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    parsed = urlparse(url)
    key = parsed.path.strip("/") + "/index.json" if parsed.path.strip("/") else "index.json"
    client = boto3.client("s3", config=_client_config(cloud_type))
    try:
        client.head_object(Bucket=parsed.netloc, Key=key)
    except NoCredentialsError:
        raise ConnectionError(
            f"{url}: no AWS credentials found; for a public bucket set data.cloud_type='s3_public'"
        ) from None
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(
                f"{url}: no index.json there; is it a dataset prepared with launch/prepare_data.py?"
            ) from None
        raise ConnectionError(f"{url}: cannot read s3://{parsed.netloc}/{key} ({code or err})") from None
    except BotoCoreError as err:
        raise ConnectionError(f"{url}: cannot reach S3 (cloud_type={cloud_type!r}): {err}") from None
