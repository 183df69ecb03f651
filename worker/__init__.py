"""multidentify-worker: a Kafka worker that identifies every face in an image with Tencent's multidentify."""

__version__ = "0.1.0"
