"""Content-addressed embedding cache between stages (Redis, fail-open).

`cache_key` names a stage output, `encode_tensors`/`decode_tensors` turn it into bytes without
pickle, `EmbeddingCache` stores it in Redis with single flight per key, and `EmbeddedRedis` runs a
local Redis (the application's `CacheServer` deployment owns one when no URL is configured). Nothing here imports ray.
"""

from cache.codec import FORMAT_VERSION, SUPPORTED_DTYPES, CodecError, decode_tensors, encode_tensors
from cache.embedded import EmbeddedRedis, EmbeddedRedisError, find_redis_server
from cache.embedding_cache import CacheStats, EmbeddingCache
from cache.keys import KEY_PREFIX, KEY_VERSION, cache_key, canonical_json, key_stage, text_payload

__all__ = [
    "FORMAT_VERSION",
    "KEY_PREFIX",
    "KEY_VERSION",
    "SUPPORTED_DTYPES",
    "CacheStats",
    "CodecError",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "EmbeddingCache",
    "cache_key",
    "canonical_json",
    "decode_tensors",
    "encode_tensors",
    "find_redis_server",
    "key_stage",
    "text_payload",
]
