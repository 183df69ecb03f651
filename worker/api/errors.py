"""Every failure of a multidentify call as one typed error, and the code → class table.

Classes (docs/api-notes.md#error-codes-and-classes):

    transient  back off and retry the same request (rate limit, server faults, network)
    permanent  this image/event will fail again; dead-letter it
    config     the pipeline is broken (credentials, account, configured group); stop, never dead-letter

Service codes are integers and arrive in the JSON body; failures without a body get a stable local
code: ``timeout``, ``connection``, ``http_<status>``, ``bad_response``, ``invalid_request`` (refused
locally before sending) and ``fetch_*`` (fetch mode, see worker.fetch).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorClass(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONFIG = "config"


T, P, C = ErrorClass.TRANSIENT, ErrorClass.PERMANENT, ErrorClass.CONFIG


@dataclass(frozen=True)
class CodeInfo:
    code: int
    meaning: str  # English meaning, shown in logs, tail and the demo summary
    zh: str  # the documented Chinese text, which the emulator returns as `message`
    error_class: ErrorClass
    resign: bool = False  # one immediate retry with a fresh signature may succeed (9, 13)


# The documented face codes, plus the legacy gateway codes the same auth front end answers with.
_TABLE: tuple[CodeInfo, ...] = (
    CodeInfo(3, "bad request or account suspended", "错误的请求", C),
    CodeInfo(4, "signature empty", "签名为空", C),
    CodeInfo(5, "signature malformed", "签名串错误", C),
    CodeInfo(6, "appid/bucket in signature does not match the request", "签名中的appid/bucket与操作目标不匹配", C),
    CodeInfo(7, "signature encode failed (internal)", "签名编码失败（内部错误）", T),
    CodeInfo(8, "signature decode failed (internal)", "签名解码失败（内部错误）", T),
    CodeInfo(9, "signature expired", "签名过期", C, resign=True),
    CodeInfo(10, "appid does not exist", "appid不存在", C),
    CodeInfo(11, "secret id does not exist", "secretid不存在", C),
    CodeInfo(12, "appid and secret id do not match", "appid和secretid不匹配", C),
    CodeInfo(13, "replayed signature", "重放攻击", C, resign=True),
    CodeInfo(14, "signature check failed", "签名校验失败", C),
    CodeInfo(15, "rate limited", "操作太频繁，触发频控", T),
    CodeInfo(16, "bucket does not exist", "bucket不存在", C),
    CodeInfo(17, "url empty", "url为空", P),
    CodeInfo(18, "no image or url", "没有图片或url", P),
    CodeInfo(19, "too many images", "图片数过多", P),
    CodeInfo(20, "image too large", "图片过大", P),
    CodeInfo(21, "invalid parameter", "无效参数", P),
    CodeInfo(23, "request body too large (over 1.5 MB)", "请求包体过大", P),
    CodeInfo(24, "this API is going offline", "本接口即将下线", C),
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
    CodeInfo(-1306, "group does not exist", "组不存在", C),
    CodeInfo(-1307, "group list does not exist", "组列表不存在", C),
    CodeInfo(-1308, "url image download failed", "url图片下载失败", P),
    CodeInfo(-1309, "too many faces for this person", "人脸个数超过限制", P),
    CodeInfo(-1310, "too many persons in group", "个体个数超过限制", C),
    CodeInfo(-1311, "too many groups", "组个数超过限制", C),
    CodeInfo(-1312, "near-duplicate face added to person", "对个体添加了几乎相同的人脸", P),
    CodeInfo(-1313, "invalid parameter (special characters)", "参数不合法（特殊字符比如空格、斜线、tab、换行符）", P),
    CodeInfo(-1400, "invalid image format", "非法的图片格式", P),
    CodeInfo(-1403, "image download failed", "图片下载失败", P),
    CodeInfo(-1404, "image not recognisable", "图片无法识别", P),
    CodeInfo(-1505, "bad url format", "url格式不对", P),
    CodeInfo(-1506, "image download timeout", "图片下载超时", T),
    CodeInfo(-1507, "cannot reach the image server", "无法访问url对应的图片服务器", P),
)

CODES: dict[int, CodeInfo] = {info.code: info for info in _TABLE}

# Local codes for failures that never reached a service answer.
LOCAL_CODES: dict[str, tuple[str, ErrorClass]] = {
    "timeout": ("the API did not answer in time", T),
    "connection": ("could not connect to the API", T),
    "bad_response": ("the API answered with a body that is not a valid envelope", T),
    "invalid_request": ("the request was refused locally before sending", P),
}


# Dead-letter keys for events refused before any call (worker.core.records.parse_event).
INVALID_EVENT_MEANINGS: dict[str, str] = {
    "empty_value": "the record has no value (a tombstone or zero bytes)",
    "event_too_large": "the event is larger than the worker accepts",
    "invalid_utf8": "the value is not UTF-8 text",
    "invalid_json": "the value is not a JSON object",
    "unsupported_version": "the event's schema_version is not one this worker reads",
    "invalid_url": "image_url is not an http(s) URL the worker may use",
    "invalid_event": "the event does not match schemas/event.schema.json",
    "internal_error": "the worker failed on this event (a bug): see the message",
}


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


def meaning(code: str) -> str:
    """A short English explanation of a dead-letter key (service code or local code)."""
    try:
        info = CODES.get(int(code))
    except ValueError:
        info = None
    if info:
        return info.meaning
    if code in LOCAL_CODES:
        return LOCAL_CODES[code][0]
    if code in INVALID_EVENT_MEANINGS:
        return INVALID_EVENT_MEANINGS[code]
    if code.startswith("fetch_"):
        from worker.fetch import FETCH_CODES  # fetch mode's own codes; imported late (fetch imports this module)

        if code in FETCH_CODES:
            return FETCH_CODES[code][0]
        if code.startswith("fetch_http_"):
            return f"the image server answered HTTP {code[11:]}"
    if code.startswith("http_"):
        return f"the API answered HTTP {code[5:]} without a JSON code"
    return code.replace("_", " ")


class ApiError(Exception):
    """One failed call: ``code`` is the service code as a string (``"-1308"``) or a local code."""

    def __init__(
        self,
        code: str,
        error_class: ErrorClass,
        message: str,
        *,
        http_status: int | None = None,
        resign: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.error_class = error_class
        self.message = message
        self.http_status = http_status
        self.resign = resign
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.error_class is ErrorClass.TRANSIENT

    @property
    def rate_limited(self) -> bool:
        return self.code == "15" or self.http_status == 429

    @classmethod
    def from_service(cls, code: int, message: str, http_status: int | None = None) -> ApiError:
        info = CODES.get(code)
        return cls(
            str(code),
            class_of_code(code),
            message or (info.meaning if info else "unknown service code"),
            http_status=http_status,
            resign=bool(info and info.resign),
        )

    @classmethod
    def refused(cls, code: int, reason: str) -> ApiError:
        """A request the client did not send because the service would answer ``code`` (same code and class)."""
        return cls.from_service(code, f"refused locally, not sent: {reason}")

    @classmethod
    def local(cls, code: str, message: str, *, http_status: int | None = None) -> ApiError:
        if code.startswith("http_") and http_status is not None:
            return cls(code, class_of_http_status(http_status), message, http_status=http_status)
        _, error_class = LOCAL_CODES.get(code, ("", T))
        return cls(code, error_class, message, http_status=http_status)

    def __reduce__(self):  # type: ignore[no-untyped-def]  # keep pickling (process pools, hypothesis)
        return (
            _rebuild,
            (self.code, self.error_class, self.message, self.http_status, self.resign, self.retry_after),
        )


def _rebuild(
    code: str, error_class: ErrorClass, message: str, http_status: int | None, resign: bool, retry_after: float | None
) -> ApiError:
    return ApiError(code, error_class, message, http_status=http_status, resign=resign, retry_after=retry_after)


#: Which setting to look at for each configuration/auth code (the reason a stopped worker prints).
CONFIG_CAUSES: dict[str, str] = {
    "3": "the account (arrears/suspended) or a malformed request",
    "4": "secret_id/secret_key (MDW_SECRET_ID, MDW_SECRET_KEY): the signature is empty",
    "5": "secret_id/secret_key (MDW_SECRET_ID, MDW_SECRET_KEY): the signature is malformed",
    "6": "appid/bucket (MDW_APPID, MDW_BUCKET) do not match the signature",
    "9": "the system clock or signature_lifetime_s (MDW_SIGNATURE_LIFETIME_S): signatures arrive expired",
    "10": "appid (MDW_APPID): the AppID does not exist",
    "11": "secret_id (MDW_SECRET_ID): the SecretId does not exist",
    "12": "appid/secret_id (MDW_APPID, MDW_SECRET_ID) do not belong together (sub-account keys give this)",
    "13": "the system clock: signatures are seen as replayed",
    "14": "secret_key (MDW_SECRET_KEY): the signature does not verify",
    "16": "bucket (MDW_BUCKET): the bucket does not exist",
    "24": "the API version: Tencent is retiring this interface",
    "-1306": "group_ids (MDW_GROUP_IDS): a configured group does not exist",
    "-1307": "group_ids (MDW_GROUP_IDS): the appid has no groups",
    "-1310": "the group is full (20000 persons)",
    "-1311": "the appid has too many groups (5000)",
    "http_401": "secret_id/secret_key (MDW_SECRET_ID, MDW_SECRET_KEY) and the account's permissions",
    "http_403": "the account's permissions for this API (secret_id MDW_SECRET_ID)",
}


def config_error_reason(err: ApiError) -> str:
    cause = CONFIG_CAUSES.get(err.code, "the worker's configuration")
    status = f", HTTP {err.http_status}" if err.http_status else ""
    return f"the face API refused our configuration (code {err.code}: {err.message}{status}); check {cause}"
