"""The one registry of dead-letter keys: every code a failure can end under, with its meaning, class and origin.

A dead letter is keyed by one of these (``mdw.error.code``, the record key, the metrics' code label):

    origin   keys                                         made by
    service  the face API's integer codes, as text         ApiError.from_service / .refused (worker.api)
             (``"15"``, ``"-1308"``; ``CODES``)
    client   ``timeout``, ``connection``, ``bad_response``,   ApiError.local (worker.api.client, .models);
             ``http_<status>``, ``invalid_request``,        ``internal_error`` by worker.runtime.dispatch
             ``internal_error``                            (a bug in the worker, never the event's fault)
    fetch    ``fetch_*``, ``fetch_http_<status>``           ApiError.fetch (worker.fetch, fetch mode)
    event    ``empty_value`` … ``invalid_event``            InvalidEvent (worker.core.records.parse_event)

Classes (docs/api-notes.md#error-codes-and-classes):

    transient  back off and retry the same request (rate limit, server faults, network)
    permanent  this image/event will fail again; dead-letter it
    config     the pipeline is broken (credentials, account, configured group); stop, never dead-letter

Events refused before any call are permanent by nature; their dead letters carry the class ``invalid``
(``worker.core.records.INVALID_CLASS``, disposition ``rejected``) to tell them from a refused image.
Configuration keys name the setting to look at (``check``), which the stopped worker prints.

This module is a leaf: it imports nothing of the worker, so anything (fetch.py included) may import it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorClass(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONFIG = "config"


class Origin(enum.StrEnum):
    """Where a failure came from; set on each ``ApiError`` where it is made (never read off the key)."""

    SERVICE = "service"  # the face API answered with this code (or would: refused locally with its code)
    CLIENT = "client"  # this worker: no usable answer from the API, a local refusal, or a bug
    FETCH = "fetch"  # fetch mode: downloading the image from its server
    EVENT = "event"  # the input event itself, refused before any call


T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CONFIG


@dataclass(frozen=True)
class CodeInfo:
    """One service code (the face API's documented table)."""

    code: int
    meaning: str  # English meaning, shown in logs, tail and the demo summary
    zh: str  # the documented Chinese text, which the emulator returns as `message`
    error_class: ErrorClass
    resign: bool = False  # one immediate retry with a fresh signature may succeed (9, 13)
    check: str | None = None  # config codes: which setting to look at (the reason a stopped worker prints)
    about_groups: bool = False  # about the configured groups: the event's own fault when it named its groups


@dataclass(frozen=True)
class KeyInfo:
    """One dead-letter key, whatever its origin: what ``lookup`` answers."""

    key: str
    meaning: str
    error_class: ErrorClass
    origin: Origin
    check: str | None = None  # config keys: which setting to look at
    about_groups: bool = False


_CREDENTIALS = "secret_id/secret_key (MDW_SECRET_ID, MDW_SECRET_KEY)"
_GROUPS = "group_ids (MDW_GROUP_IDS)"

# The documented face codes, plus the legacy gateway codes the same auth front end answers with.
_TABLE: tuple[CodeInfo, ...] = (
    CodeInfo(3, "bad request or account suspended", "错误的请求", C,
             check="the account (arrears/suspended) or a malformed request"),
    CodeInfo(4, "signature empty", "签名为空", C, check=f"{_CREDENTIALS}: the signature is empty"),
    CodeInfo(5, "signature malformed", "签名串错误", C, check=f"{_CREDENTIALS}: the signature is malformed"),
    CodeInfo(6, "appid/bucket in signature does not match the request", "签名中的appid/bucket与操作目标不匹配", C,
             check="appid/bucket (MDW_APPID, MDW_BUCKET) do not match the signature"),
    CodeInfo(7, "signature encode failed (internal)", "签名编码失败（内部错误）", T),
    CodeInfo(8, "signature decode failed (internal)", "签名解码失败（内部错误）", T),
    CodeInfo(9, "signature expired", "签名过期", C, resign=True,
             check="the system clock or signature_lifetime_s (MDW_SIGNATURE_LIFETIME_S): signatures arrive expired"),
    CodeInfo(10, "appid does not exist", "appid不存在", C, check="appid (MDW_APPID): the AppID does not exist"),
    CodeInfo(11, "secret id does not exist", "secretid不存在", C,
             check="secret_id (MDW_SECRET_ID): the SecretId does not exist"),
    CodeInfo(12, "appid and secret id do not match", "appid和secretid不匹配", C,
             check="appid/secret_id (MDW_APPID, MDW_SECRET_ID) do not belong together (sub-account keys give this)"),
    CodeInfo(13, "replayed signature", "重放攻击", C, resign=True,
             check="the system clock: signatures are seen as replayed"),
    CodeInfo(14, "signature check failed", "签名校验失败", C,
             check="secret_key (MDW_SECRET_KEY): the signature does not verify"),
    CodeInfo(15, "rate limited", "操作太频繁，触发频控", T),
    CodeInfo(16, "bucket does not exist", "bucket不存在", C, check="bucket (MDW_BUCKET): the bucket does not exist"),
    CodeInfo(17, "url empty", "url为空", P),
    CodeInfo(18, "no image or url", "没有图片或url", P),
    CodeInfo(19, "too many images", "图片数过多", P),
    CodeInfo(20, "image too large", "图片过大", P),
    CodeInfo(21, "invalid parameter", "无效参数", P),
    CodeInfo(23, "request body too large (over 1.5 MB)", "请求包体过大", P),
    CodeInfo(24, "this API is going offline", "本接口即将下线", C,
             check="the API version: Tencent is retiring this interface"),
    CodeInfo(107, "auth service unavailable", "鉴权服务不可用", T),
    CodeInfo(108, "auth service unavailable", "鉴权服务不可用", T),
    CodeInfo(200, "internal pack failure", "内部打包失败", T),
    CodeInfo(201, "internal unpack failure", "内部解包失败", T),
    CodeInfo(202, "internal link failure", "内部链接失败", T),
    CodeInfo(203, "internal processing timeout", "内部处理超时", T),
    CodeInfo(213, "internal error", "内部错误", T),
    CodeInfo(-1101, "face detection failed (no usable face)", "人脸检测失败", P),
    CodeInfo(-1102, "image decode failed", "图片解码失败", P),
    CodeInfo(-1103, "feature processing failed", "特征处理失败", P),
    CodeInfo(-1104, "contour extraction failed", "提取轮廓错误", P),
    CodeInfo(-1105, "gender extraction failed", "提取性别错误", P),
    CodeInfo(-1106, "expression extraction failed", "提取表情错误", P),
    CodeInfo(-1107, "age extraction failed", "提取年龄错误", P),
    CodeInfo(-1108, "pose extraction failed", "提取姿态错误", P),
    CodeInfo(-1109, "glasses extraction failed", "提取眼镜错误", P),
    CodeInfo(-1200, "feature storage error", "特征存储错误", T),
    CodeInfo(-1300, "image empty", "图片为空", P),
    CodeInfo(-1301, "parameter empty", "参数为空", P),
    CodeInfo(-1302, "person already exists", "个体已存在", P),
    CodeInfo(-1303, "person does not exist", "个体不存在", P),
    CodeInfo(-1304, "parameter too long", "参数过长", P),
    CodeInfo(-1305, "face does not exist", "人脸不存在", P),
    CodeInfo(-1306, "group does not exist", "组不存在", C, about_groups=True,
             check=f"{_GROUPS}: a configured group does not exist"),
    CodeInfo(-1307, "group list does not exist", "组列表不存在", C, about_groups=True,
             check=f"{_GROUPS}: the appid has no groups"),
    CodeInfo(-1308, "url image download failed", "url图片下载失败", P),
    CodeInfo(-1309, "too many faces for this person", "人脸个数超过限制", P),
    CodeInfo(-1310, "too many persons in group", "个体个数超过限制", C, check="the group is full (20000 persons)"),
    CodeInfo(-1311, "too many groups", "组个数超过限制", C, check="the appid has too many groups (5000)"),
    CodeInfo(-1312, "near-duplicate face added to person", "对个体添加了几乎相同的人脸", P),
    CodeInfo(-1313, "invalid parameter (special characters)", "参数不合法（特殊字符比如空格、斜线、tab、换行符）", P),
    CodeInfo(-1400, "invalid image format", "非法的图片格式", P),
    CodeInfo(-1403, "image download failed", "图片下载失败", P),
    CodeInfo(-1404, "image not recognisable", "图片无法识别", P),
    CodeInfo(-1505, "bad url format", "url格式不对", P),
    CodeInfo(-1506, "image download timeout", "图片下载超时", T),
    CodeInfo(-1507, "cannot reach the image server", "无法访问url对应的图片服务器", P),
)  # fmt: skip

CODES: dict[int, CodeInfo] = {info.code: info for info in _TABLE}

# Keys without a service code: this worker's own (client), fetch mode's, and refused events'.
_KEYS: tuple[KeyInfo, ...] = (
    KeyInfo("timeout", "the API did not answer in time", T, Origin.CLIENT),
    KeyInfo("connection", "could not connect to the API", T, Origin.CLIENT),
    KeyInfo("bad_response", "the API answered with a body that is not a valid envelope", T, Origin.CLIENT),
    KeyInfo("invalid_request", "the request was refused locally before sending", P, Origin.CLIENT),
    KeyInfo("internal_error", "the worker failed on this event (a bug): see the message", P, Origin.CLIENT),
    KeyInfo(
        "fetch_refused",
        "the image URL or its address is not allowed (scheme, userinfo or a private address)",
        P,
        Origin.FETCH,
    ),
    KeyInfo("fetch_timeout", "the image server did not answer or finish in time", T, Origin.FETCH),
    KeyInfo("fetch_connection", "could not connect to the image server or the transfer broke", T, Origin.FETCH),
    KeyInfo("fetch_tls", "the image server's TLS certificate failed verification", P, Origin.FETCH),
    KeyInfo("fetch_too_large", "the image is larger than the request body allows", P, Origin.FETCH),
    KeyInfo("fetch_not_image", "the download is not a JPEG, PNG, BMP, WEBP or TIFF image", P, Origin.FETCH),
    KeyInfo("fetch_too_many_redirects", "the image URL redirects too many times", P, Origin.FETCH),
    KeyInfo("empty_value", "the record has no value (a tombstone or zero bytes)", P, Origin.EVENT),
    KeyInfo("event_too_large", "the event is larger than the worker accepts", P, Origin.EVENT),
    KeyInfo("invalid_utf8", "the value is not UTF-8 text", P, Origin.EVENT),
    KeyInfo("invalid_json", "the value is not a JSON object", P, Origin.EVENT),
    KeyInfo("unsupported_version", "the event's schema_version is not one this worker reads", P, Origin.EVENT),
    KeyInfo("invalid_url", "image_url is not an http(s) URL the worker may use", P, Origin.EVENT),
    KeyInfo("invalid_event", "the event does not match schemas/event.schema.json", P, Origin.EVENT),
)

#: Every fixed key (the ``http_<status>`` families are answered by :func:`lookup`).
REGISTRY: dict[str, KeyInfo] = {
    **{
        str(c.code): KeyInfo(str(c.code), c.meaning, c.error_class, Origin.SERVICE, c.check, c.about_groups)
        for c in _TABLE
    },
    **{k.key: k for k in _KEYS},
}

# Families: the API's HTTP answers without a JSON code, and the image server's answers in fetch mode.
_HTTP, _FETCH_HTTP = "http_", "fetch_http_"
_HTTP_CHECKS = {
    401: f"{_CREDENTIALS} and the account's permissions",
    403: "the account's permissions for this API (secret_id MDW_SECRET_ID)",
}

#: Views by origin, in the shape older callers read: key → (meaning, class).
LOCAL_CODES: dict[str, tuple[str, ErrorClass]] = {
    k: (i.meaning, i.error_class) for k, i in REGISTRY.items() if i.origin is Origin.CLIENT
}
FETCH_CODES: dict[str, tuple[str, ErrorClass]] = {
    k: (i.meaning, i.error_class) for k, i in REGISTRY.items() if i.origin is Origin.FETCH
}
#: Dead-letter keys of events refused before any call (worker.core.records.parse_event).
INVALID_CODES: frozenset[str] = frozenset(k for k, i in REGISTRY.items() if i.origin is Origin.EVENT)
#: Codes about the configured groups: a config error for the default groups, the event's fault for its own.
GROUP_CODES: frozenset[str] = frozenset(k for k, i in REGISTRY.items() if i.about_groups)


def class_of_code(code: int) -> ErrorClass:
    """Class of a service code; an unknown non-zero code is treated as transient (bounded by retries)."""
    info = CODES.get(code)
    return info.error_class if info else T


def class_of_http_status(status: int) -> ErrorClass:
    """For answers without a JSON code: 429 and 5xx are transient; 401/403 config; other 4xx permanent."""
    if status == 429 or status >= 500:
        return T
    if status in (401, 403):
        return C
    return P


def class_of_fetch_status(status: int) -> ErrorClass:
    """The image server's answer: 408/429/5xx transient, every other status permanent (401/403 included:
    a forbidden image is this event's problem, not the pipeline's)."""
    return T if status in (408, 429) or status >= 500 else P


def lookup(key: str) -> KeyInfo | None:
    """The registry's entry for a dead-letter key, the ``http_<status>`` families included; None if unknown."""
    info = REGISTRY.get(key)
    if info is not None:
        return info
    # Any suffix reads as a status (as the texts always did); only digits give a class other than transient.
    if key.startswith(_FETCH_HTTP):
        status = key[len(_FETCH_HTTP) :]
        cls = class_of_fetch_status(int(status)) if status.isdigit() else T
        return KeyInfo(key, f"the image server answered HTTP {status}", cls, Origin.FETCH)
    if key.startswith(_HTTP):
        status = key[len(_HTTP) :]
        number = int(status) if status.isdigit() else None
        return KeyInfo(
            key,
            f"the API answered HTTP {status} without a JSON code",
            class_of_http_status(number) if number is not None else T,
            Origin.CLIENT,
            _HTTP_CHECKS.get(number) if number is not None else None,
        )
    return None


def meaning(code: str) -> str:
    """A short English explanation of a dead-letter key (any origin); an unknown key is spelled out."""
    info = lookup(code)
    if info is None:
        try:  # a service code spelled otherwise ("+15", " 15"), read as the integer it is
            service = CODES.get(int(code))
        except ValueError:
            service = None
        return service.meaning if service else code.replace("_", " ")
    return info.meaning
