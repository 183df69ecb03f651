"""The one registry of dead-letter keys: every code a failure can end under, with its meaning, class and origin.

A dead letter is keyed by one of these (``mdw.error.code``, the record key, the metrics' code label):

    origin   keys                                         made by
    service  the face API's integer codes, as text         ApiError.from_service / .refused (worker.api)
             (``"15"``, ``"-1308"``; ``CODES``)
             IAI's string codes (``"AuthFailure.Signature    ApiError.from_iai / .refused (worker.api.iai_wire)
             Failure"``; ``IAI_CODES``, and families of
             unlisted ones: see :func:`lookup`)
    client   ``timeout``, ``connection``, ``bad_response``,   ApiError.local (worker.api.client, .models);
             ``http_<status>``, ``invalid_request``,        ``internal_error`` by worker.runtime.dispatch
             ``internal_error``, ``result_too_large``       (a bug in the worker, never the event's fault);
                                                           ``result_too_large`` by worker.runtime.outputs
    fetch    ``fetch_*``, ``fetch_http_<status>``           ApiError.fetch (worker.fetch, fetch mode)
    event    ``empty_value`` … ``invalid_event``,           InvalidEvent (worker.core.records.parse_event and
             the formats' codes (``not_a_cloudevent`` …)     the other formats, worker.core.formats)

Classes (docs/api-notes.md#error-codes-and-classes):

    transient  back off and retry the same request (rate limit, server faults, network)
    permanent  this image/event will fail again; dead-letter it
    config     the pipeline is broken (credentials, account, configured group); stop, never dead-letter

Events refused before any call are permanent by nature; their dead letters carry the class ``invalid``
(``worker.core.records.INVALID_CLASS``, disposition ``rejected``) to tell them from a refused image.
Configuration keys name the setting to look at (``check``), which the stopped worker prints.

Both APIs' service codes live here; they cannot collide: v1's are integers, IAI's are dotted names that start
with a capital letter (``is_iai_code``), every other key is lower case.

This module is a leaf: it imports nothing of the worker, so anything (worker.fetch included) may import it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Api(enum.StrEnum):
    """Which Tencent face API answered (or would have): result records and dead letters say it."""

    V1 = "v1"  # 人脸识别 1.0: /face/multidentify, integer codes
    IAI = "iai"  # API 3.0, iai.tencentcloudapi.com: SearchFaces, string codes


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
    rate_limited: bool = False  # the service asks us to slow down (feeds the rate limiter, never the breaker)


@dataclass(frozen=True)
class IaiCodeInfo:
    """One IAI error code (``Response.Error.Code``): the SDK's errorcodes.py and the API 3.0 common codes."""

    code: str
    meaning: str  # English meaning, shown in logs, tail and the demo summary
    zh: str  # Tencent's Chinese text (the SDK's comment, the common-code table), for the emulator's Message
    error_class: ErrorClass
    resign: bool = False  # one immediate retry with a fresh timestamp and signature may succeed
    check: str | None = None  # config codes: which setting to look at
    about_groups: bool = False  # as CodeInfo.about_groups
    rate_limited: bool = False  # as CodeInfo.rate_limited


@dataclass(frozen=True)
class KeyInfo:
    """One dead-letter key, whatever its origin: what ``lookup`` answers."""

    key: str
    meaning: str
    error_class: ErrorClass
    origin: Origin
    check: str | None = None  # config keys: which setting to look at
    about_groups: bool = False
    rate_limited: bool = False
    api: Api | None = None  # service keys: the API whose code it is (None for this worker's own keys)


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
    CodeInfo(15, "rate limited", "操作太频繁，触发频控", T, rate_limited=True),
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

# -- IAI (API 3.0, SearchFaces) ------------------------------------------------------------------------------------
# Every code of Tencent's SDK (tencentcloud/iai/v20200303/errorcodes.py; tests/api/test_iai_codes.py reads that
# module, so a code a newer SDK adds fails the test until it is classified here) and the API 3.0 common codes
# any action may answer. The classes follow docs/api-notes.md; a code that only a management call (CreateGroup,
# CreatePerson, CreateFace …) can answer is about that request: permanent unless a comment says otherwise.
_IAI_ACCOUNT = "the Tencent Cloud account: IAI enabled, paid up and not frozen (console, billing)"
_IAI_CAM = "the CAM permissions of secret_id (MDW_SECRET_ID) for the iai actions the worker calls"
_IAI_ENDPOINT = "iai_endpoint (MDW_IAI_ENDPOINT) and the API version the worker speaks (2020-03-03)"
_IAI_REGION = "iai_region (MDW_IAI_REGION)"
_IAI_TOKEN = "iai_token (MDW_IAI_TOKEN): temporary credentials need their current token"
_IAI_GROUPS = f"{_GROUPS}: the IAI groups searched"

I = IaiCodeInfo  # noqa: E741  (one letter keeps the table one row per code)
_IAI_TABLE: tuple[IaiCodeInfo, ...] = (
    # Authentication: the key, the signature, the token, the account's permissions.
    I("AuthFailure.InvalidAuthorization", "the Authorization header is not a valid TC3 authorization", "认证失败。", C,
      check=f"{_CREDENTIALS}: the Authorization header is malformed"),
    I("AuthFailure.InvalidSecretId", "the SecretId is not an API key", "密钥非法（不是云API密钥类型）。", C,
      check="secret_id (MDW_SECRET_ID): not a Tencent Cloud API key"),
    I("AuthFailure.MFAFailure", "multi-factor authentication failed", "MFA错误。", C,
      check=f"{_CREDENTIALS}: the key requires MFA"),
    I("AuthFailure.SecretIdNotFound", "the SecretId does not exist or is disabled", "密钥不存在。", C,
      check="secret_id (MDW_SECRET_ID): the key does not exist or is disabled"),
    # Like v1's 9: a request that waited long enough is re-signed once; a persistent one is the clock.
    I("AuthFailure.SignatureExpire", "signature expired (timestamp more than 5 minutes off)", "签名过期。", C,
      resign=True, check="the system clock: requests arrive more than five minutes off Tencent's time"),
    I("AuthFailure.SignatureFailure", "signature check failed", "签名错误。", C,
      check="secret_key (MDW_SECRET_KEY): the signature does not verify"),
    I("AuthFailure.TokenFailure", "the temporary credentials' token is invalid", "token错误。", C, check=_IAI_TOKEN),
    I("AuthFailure.UnauthorizedOperation", "the key is not authorised for this action (CAM)", "请求未授权。", C,
      check=_IAI_CAM),
    I("UnauthorizedOperation", "unauthorised operation", "未授权操作。", C, check=_IAI_CAM),
    I("IpInBlacklist", "the caller's IP address is on the account's deny list", "IP地址在黑名单中。", C,
      check="the account's IP deny list (console): it lists this worker's address"),
    I("IpNotInWhitelist", "the caller's IP address is not on the account's allow list", "IP地址不在白名单中。", C,
      check="the account's IP allow list (console): it lacks this worker's address"),
    # Rate limits: transient, and they feed the rate limiter (ApiError.rate_limited) instead of the breaker.
    I("RequestLimitExceeded", "rate limited", "请求的次数超过了频率限制。", T, rate_limited=True),
    I("RequestLimitExceeded.GlobalRegionUinLimitExceeded", "rate limited (the account, all regions)",
      "主账号超过频率限制。", T, rate_limited=True),
    I("RequestLimitExceeded.IPLimitExceeded", "rate limited (this IP address)", "IP限频。", T, rate_limited=True),
    I("RequestLimitExceeded.UinLimitExceeded", "rate limited (the account)", "主账号限频。", T, rate_limited=True),
    # The same words as RequestLimitExceeded under FailedOperation: a rate limit too. Treated as a plain transient
    # failure it would be retried at the same pace and counted against the breaker, which would open on a
    # working API; as a rate limit it slows the worker down, which is what it asks for.
    I("FailedOperation.RequestLimitExceeded", "rate limited", "请求频率超过限制。", T, rate_limited=True),
    # Server faults: retry.
    I("InternalError", "internal error", "内部错误。", T),
    I("FailedOperation", "operation failed", "操作失败。", T),  # no detail: like an unknown code, retried
    I("FailedOperation.RequestTimeout", "backend timeout", "后端服务超时。", T),
    I("FailedOperation.RpcFail", "internal RPC failed", "Rpc调用失败。", T),
    I("FailedOperation.ServerError", "algorithm service error, retry", "算法服务异常，请重试。", T),
    I("FailedOperation.UnKnowError", "internal error", "内部错误。", T),
    I("ServiceUnavailable", "the service is temporarily unavailable", "当前服务暂时不可用。", T),
    I("FailedOperation.ConflictOperation", "concurrent operations on the same person",
      "操作冲突，请勿同时操作相同的Person。", T),
    I("FailedOperation.CreateFaceConcurrent", "concurrent CreateFace on the same person",
      "增加人脸不支持并发操作。", T),
    I("ResourceInUse", "the resource is in use", "资源被占用。", T),
    # "Failed to obtain the authentication information": every other ResourceUnavailable.* is config, but this one
    # reads as the auth backend failing to answer (v1's 107/108, transient), not as a verdict on the account;
    # config would stop the worker (or dead-letter the event) on a blip the next call may not see.
    I("ResourceUnavailable.GetAuthInfoError", "could not obtain the authentication information", "获取认证信息失败。",
      T),
    # The account: billing, service not enabled, frozen. An operator has to act.
    I("ResourceUnavailable", "the resource is unavailable", "资源不可用。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.ChargeStatusException", "the account is in arrears", "账号已欠费。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.Delivering", "the purchased resource is still being delivered", "资源正在发货中。", C,
      check=f"{_IAI_ACCOUNT}: the purchase is still being provisioned"),
    I("ResourceUnavailable.Freeze", "the account is frozen", "账号已被冻结。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.InArrears", "the account is in arrears", "账号已欠费。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.LowBalance", "the account's balance is too low", "余额不足。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.NotExist", "billing state unknown: is IAI enabled in the console?",
      "计费状态未知，请确认是否已在控制台开通服务。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.NotReady", "the IAI service is not enabled for the account", "服务未开通。", C,
      check=_IAI_ACCOUNT),
    I("ResourceUnavailable.Recover", "the resource has been reclaimed", "资源已被回收。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.StopUsing", "the account's service is stopped", "账号已停服。", C, check=_IAI_ACCOUNT),
    I("ResourceUnavailable.UnknownStatus", "billing state unknown", "计费状态未知。", C, check=_IAI_ACCOUNT),
    I("ResourcesSoldOut.ChargeStatusException", "billing state abnormal", "计费状态异常。", C, check=_IAI_ACCOUNT),
    I("ResourceInsufficient", "insufficient resources", "资源不足。", C, check=_IAI_ACCOUNT),
    I("LimitExceeded", "quota exceeded", "超过配额限制。", C, check=f"{_IAI_ACCOUNT}: a quota is used up"),
    # Endpoint, region, version: every call would fail the same way.
    I("ActionOffline", "this action has been retired", "接口已下线。", C, check=_IAI_ENDPOINT),
    I("InvalidAction", "the action does not exist", "接口不存在。", C, check=_IAI_ENDPOINT),
    I("NoSuchProduct", "the product does not exist at this endpoint", "产品不存在。", C, check=_IAI_ENDPOINT),
    I("NoSuchVersion", "the API version does not exist", "接口版本不存在。", C, check=_IAI_ENDPOINT),
    I("UnsupportedOperation", "unsupported operation", "操作不支持。", C, check=_IAI_ENDPOINT),
    I("UnsupportedOperation.UnknowMethod", "unknown method name", "未知方法名。", C, check=_IAI_ENDPOINT),
    I("UnsupportedProtocol", "unsupported HTTP method or protocol", "http(s)请求协议错误，只支持GET和POST请求。", C,
      check=_IAI_ENDPOINT),
    I("UnsupportedRegion", "the action is not offered in this region", "接口不支持所传地域。", C, check=_IAI_REGION),
    # The configured groups (config), or the event's own groups (its fault): worker.runtime.identify decides.
    I("InvalidParameterValue.GroupIdNotExist", "group does not exist", "人员库ID不存在。", C, about_groups=True,
      check=f"{_IAI_GROUPS}: a configured group does not exist"),
    I("InvalidParameterValue.GroupIdNotExists", "group does not exist", "对应的人员库ID在库中不存在。", C,
      about_groups=True, check=f"{_IAI_GROUPS}: a configured group does not exist"),
    I("InvalidParameterValue.GroupIdIllegal", "group id has characters other than letters, digits and -%@#&_",
      "人员库ID包含非法字符。人员库ID只支持英文、数字、-%@#&_。", C, about_groups=True,
      check=f"{_IAI_GROUPS}: ids may hold only letters, digits and -%@#&_"),
    I("InvalidParameterValue.GroupIdTooLong", "group id too long", "人员库ID超出长度限制。", C, about_groups=True,
      check=f"{_IAI_GROUPS}: an id is longer than 64 bytes"),
    I("InvalidParameterValue.GroupIdsExceed", "too many groups in one search (over 100)", "传入的人员库列表超过限制。",
      C, about_groups=True, check=f"{_IAI_GROUPS}: at most 100 groups per search"),
    I("InvalidParameterValue.NoFaceInGroups", "the groups searched hold no face", "指定分组中没有人脸。", C,
      about_groups=True, check=f"{_IAI_GROUPS}: no face is enrolled in them"),
    I("FailedOperation.AcrossVersionsError", "the groups searched use different face model versions",
      "该操作不支持跨算法模型版本。", C, about_groups=True,
      check=f"{_IAI_GROUPS}: all must have the same FaceModelVersion"),
    I("InvalidParameterValue.UnsupportedGroupFaceModelVersion", "not supported for groups of face model 2.0 or older",
      "该操作不支持算法模型版本2.0及以下版本。", C, about_groups=True,
      check=f"{_IAI_GROUPS}: they use face model 2.0 or older"),
    I("FailedOperation.GroupInDeletedState", "the group is being deleted", "当前组正处于删除状态，请等待。", C,
      about_groups=True, check=f"{_IAI_GROUPS}: a configured group is being deleted"),
    # "Too many faces searched": MaxFaceNum over 10 (refused at start by SearchOptions) or groups past the 1M/3M
    # faces one search covers; either way the configuration, or the event's own groups.
    I("FailedOperation.SearchFacesExceed", "too many faces to search (MaxFaceNum, or the groups' size)",
      "检索人脸个数超过限制。", C, about_groups=True,
      check="iai_max_face_num (MDW_IAI_MAX_FACE_NUM, at most 10) and the size of the groups searched "
            "(at most 1M faces for face model 2.0, 3M for 3.0)"),
    # The search options: SearchOptions checks their ranges at start, so the service disagreeing is the setting.
    I("InvalidParameterValue.SearchPersonsExceed", "too many candidates per face requested", "搜索的人员数目超过限制。",
      C, check="iai_max_person_num (MDW_IAI_MAX_PERSON_NUM, at most 100)"),
    I("InvalidParameterValue.FaceMatchThresholdIllegal", "FaceMatchThreshold is not valid",
      "FaceMatchThreshold参数不合法。", C, check="iai_face_match_threshold (MDW_IAI_FACE_MATCH_THRESHOLD)"),
    I("InvalidParameterValue.QualityControlIllegal", "QualityControl is not valid", "QualityControl参数不合法。", C,
      check="iai_quality_control (MDW_IAI_QUALITY_CONTROL, 0 to 4)"),
    # Account-wide limits an operator must lift (v1's -1310/-1311 are config too).
    I("InvalidParameterValue.AccountFaceNumExceed", "the account holds too many faces", "账号脸数量超出限制。", C,
      check=f"{_IAI_ACCOUNT}: the account's face quota is used up"),
    I("InvalidParameterValue.GroupFaceNumExceed", "the group holds too many faces", "人员库人脸数量超出限制。", C,
      check="the group is full (faces per group)"),
    I("InvalidParameterValue.GroupNumExceed", "the account has too many groups",
      "人员库数量超出限制。如需增加，请联系我们。", C, check=f"{_IAI_ACCOUNT}: the account's group quota is used up"),
    # The image: this event will fail again.
    I("FailedOperation.ImageDownloadError", "url image download failed", "图片下载错误。", P),
    I("FailedOperation.ImageDecodeFailed", "image decode failed", "图片解码失败。", P),
    I("FailedOperation.ImageFacedetectFailed", "face detection failed", "人脸检测失败。", P),
    I("FailedOperation.ImageResolutionExceed", "image resolution too large (long side over 4000 px jpg, 2000 others)",
      "图片分辨率过大。", P),
    I("FailedOperation.ImageResolutionTooSmall", "image short side under 64 px", "图片短边分辨率小于64。", P),
    I("FailedOperation.ImageSizeExceed", "image over 5 MB base64-encoded", "base64编码后的图片数据大小不超过5M。", P),
    I("FailedOperation.FaceQualityNotQualified", "face quality below the quality control", "人脸图片质量不符要求。",
      P),
    I("FailedOperation.FaceSizeTooSmall", "every face is smaller than MinFaceSize (iai_min_face_size)",
      "人脸框大小小于MinFaceSize设置，人脸被过滤。", P),
    I("InvalidParameterValue.NoFaceInPhoto", "no face in the image", "图片中没有人脸。", P),
    I("InvalidParameterValue.ImageEmpty", "image empty", "图片为空。", P),
    I("InvalidParameterValue.ImageEmptyError", "image empty", "图片为空。", P),
    I("InvalidParameterValue.UrlIllegal", "bad url format", "URL格式不合法。", P),
    I("LimitExceeded.ErrorFaceNumExceed", "too many faces", "人脸个数超过限制。", P),
    I("RequestSizeLimitExceeded", "request body too large", "请求包超过限制大小。", P),
    I("ResponseSizeLimitExceeded", "the answer would be too large", "返回包超过限制大小。", P),
    # Malformed requests. InvalidParameter.InvalidParameter and MissingParameter.ErrorParameterEmpty could pass
    # for configuration errors; they are permanent here, like v1's 21 and -1301: the
    # configuration check (GetGroupList) takes none of SearchFaces' parameters, so it could never confirm them and
    # config would only add a check call before the same dead letter. The settings that shape the request are
    # checked at start (SearchOptions); what is left is this event's request.
    I("InvalidParameter", "invalid parameter", "参数错误（包括参数格式、类型等错误）。", P),
    I("InvalidParameter.InvalidParameter", "invalid parameter", "参数不合法。", P),
    I("InvalidParameterValue", "invalid parameter value", "参数取值错误。", P),
    I("MissingParameter", "a parameter is missing", "缺少参数。", P),
    I("MissingParameter.ErrorParameterEmpty", "a required parameter is empty", "必选参数为空。", P),
    I("UnknownParameter", "unknown parameter", "未知参数错误，用户多传未定义的参数会导致错误。", P),
    I("InvalidRequest", "the multipart body is malformed", "请求body的multipart格式错误。", P),
    I("DryRunOperation", "dry run: the request would have succeeded (never sent by this worker)",
      "DryRun操作，代表请求将会是成功的，只是多传了DryRun参数。", P),
    I("ResourceNotFound", "the resource does not exist", "资源不存在。", P),
    I("FailedOperation.CompareFail", "face comparison failed", "比对失败。", P),  # like v1's -1103: this image
    # Management calls only (the demo's enrolment): about that request.
    I("FailedOperation.DuplicatedGroupDescription", "duplicate custom field in the group",
      "同一人员库中自定义描述字段不可重复。", P),
    I("FailedOperation.GroupCannotUpgrade", "the group cannot be upgraded", "指定人员库的升级操作无法执行。", P),
    I("FailedOperation.GroupLostFaces", "the group has lost face images", "人员库存在人脸图片丢失。", P),
    I("FailedOperation.GroupPersonMapExist", "the person is already in the group", "组中已包含对应的人员Id。", P),
    I("FailedOperation.GroupPersonMapNotExist", "the person is not in the group", "组中不包含对应的人员Id。", P),
    I("FailedOperation.JobCannnotRollback", "the job cannot be rolled back", "任务无法回滚。", P),
    I("FailedOperation.UpgradeJobIdNotExist", "the group upgrade job does not exist", "人员库升级任务不存在。", P),
    I("FailedOperation.LifePhotoDetectFaces", "several faces detected", "检测到多张人脸。", P),
    I("FailedOperation.LifePhotoDetectFake", "the live-person comparison failed", "实人比对没通过。", P),
    I("FailedOperation.LifePhotoDetectNoFaces", "no complete face detected", "未能检测到完整人脸。", P),
    I("FailedOperation.LifePhotoSizeError", "the image is too large or too small", "传入图片过大或过小。", P),
    I("InvalidParameterValue.DeleteFaceNumExceed", "a person must keep at least one face",
      "删除人脸数量超出限制。每个人员至少需要包含一张人脸。", P),
    I("InvalidParameterValue.FaceModelVersionIllegal", "face model version not valid", "算法模型版本不合法。", P),
    I("InvalidParameterValue.GroupExDescriptionsExceed", "too many custom group fields (at most 5)",
      "人员库自定义描述字段数组长度超过限制。最多可以创建5个。", P),
    I("InvalidParameterValue.GroupExDescriptionsNameIdentical", "duplicate custom group field name",
      "人员库自定义描述字段名称不可重复。", P),
    I("InvalidParameterValue.GroupExDescriptionsNameIllegal", "custom group field name has invalid characters",
      "人员库自定义描述字段名称包含非法字符。人员库自定义描述字段名称只支持中英文、-、_、数字。", P),
    I("InvalidParameterValue.GroupExDescriptionsNameTooLong", "custom group field name too long",
      "人员库自定义描述字段名称长度超出限制。", P),
    I("InvalidParameterValue.GroupIdAlreadyExist", "group id already exists",
      "人员库ID已经存在。人员库ID不可重复。", P),
    I("InvalidParameterValue.GroupNameAlreadyExist", "group name already exists",
      "人员库名称已经存在。人员库名称不可重复。", P),
    I("InvalidParameterValue.GroupNameIllegal", "group name has invalid characters",
      "人员库名称包含非法字符。人员库名称只支持中英文、-、_、数字。", P),
    I("InvalidParameterValue.GroupNameTooLong", "group name too long", "人员库名称超出长度限制。", P),
    I("InvalidParameterValue.GroupNumPerPersonExceed", "the person is in too many groups (at most 100)",
      "人员库数量超出限制。单个人员最多可被添加至100个人员库。", P),
    I("InvalidParameterValue.GroupTagIllegal", "group tag has invalid characters",
      "人员库备注包含非法字符。人员库备注只支持中英文、-、_、数字。", P),
    I("InvalidParameterValue.GroupTagTooLong", "group tag too long", "人员库备注超出长度限制。", P),
    I("InvalidParameterValue.LimitExceed", "Limit too large", "返回数量超出限制。", P),
    I("InvalidParameterValue.OffsetExceed", "Offset past the end", "起始序号过大。请检查需要请求的数组长度。", P),
    I("InvalidParameterValue.PersonExDescriptionInfosExceed", "too many custom person fields (at most 5)",
      "人员自定义描述字段数组长度超过限制。最多5个。", P),
    I("InvalidParameterValue.PersonExDescriptionsNameIdentical", "duplicate custom person field name",
      "人员自定义描述字段名称不可重复。", P),
    I("InvalidParameterValue.PersonExDescriptionsNameIllegal", "custom person field name has invalid characters",
      "人员自定义描述字段名称包含非法字符。人员自定义描述字段名称只支持中英文、-、_、数字。", P),
    I("InvalidParameterValue.PersonExDescriptionsNameTooLong", "custom person field name too long",
      "人员自定义描述字段名称长度超出限制。", P),
    I("InvalidParameterValue.PersonExistInGroup", "the person is already in the group", "组中已包含对应的人员Id。", P),
    I("InvalidParameterValue.PersonFaceNumExceed", "too many faces for this person (at most 5)",
      "人员人脸数量超出限制。单个人员最多可以包含五张人脸。", P),
    I("InvalidParameterValue.PersonGenderIllegal", "gender not valid (0, 1 or 2)",
      "人员性别设置出错。0代表未填写，1代表男性，2代表女性。", P),
    I("InvalidParameterValue.PersonIdAlreadyExist", "person already exists", "人员ID已经存在。人员ID不可重复。", P),
    I("InvalidParameterValue.PersonIdIllegal", "person id has characters other than letters, digits and -%@#&_",
      "人员ID包含非法字符。人员ID只支持英文、数字、-%@#&_。", P),
    I("InvalidParameterValue.PersonIdNotExist", "person does not exist", "人员ID不存在。", P),
    I("InvalidParameterValue.PersonIdTooLong", "person id too long", "人员ID超出长度限制。", P),
    I("InvalidParameterValue.PersonNameIllegal", "person name has invalid characters",
      "人员名称包含非法字符。人员名称只支持中英文、-、_、数字。", P),
    I("InvalidParameterValue.PersonNameTooLong", "person name too long", "人员名称超出长度限制。", P),
    I("InvalidParameterValue.UniquePersonControlIllegal", "UniquePersonControl not valid",
      "UniquePersonControl参数不合法。", P),
    I("InvalidParameterValue.UploadFaceNumExceed", "too many faces in one upload (at most 4)", "一次最多上传四张人脸。",
      P),
)  # fmt: skip
del I

IAI_CODES: dict[str, IaiCodeInfo] = {info.code: info for info in _IAI_TABLE}

# Keys without a service code: this worker's own (client), fetch mode's, and refused events'.
_KEYS: tuple[KeyInfo, ...] = (
    KeyInfo("timeout", "the API did not answer in time", T, Origin.CLIENT),
    KeyInfo("connection", "could not connect to the API", T, Origin.CLIENT),
    KeyInfo("bad_response", "the API answered with a body that is not a valid envelope", T, Origin.CLIENT),
    KeyInfo("invalid_request", "the request was refused locally before sending", P, Origin.CLIENT),
    KeyInfo("internal_error", "the worker failed on this event (a bug): see the message", P, Origin.CLIENT),
    KeyInfo(
        "result_too_large",
        "the result record was refused as too large for the results topic (its max.message.bytes)",
        P,
        Origin.CLIENT,
    ),
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
    # Input formats other than the worker's own event (worker.core.formats, docs/event-formats.md).
    KeyInfo("not_a_cloudevent", "the record is neither a binary-mode nor a structured CloudEvent", P, Origin.EVENT),
    KeyInfo("unsupported_specversion", "the CloudEvent's specversion is not 1.0", P, Origin.EVENT),
    KeyInfo(
        "invalid_cloudevent",
        "the CloudEvent's attributes do not match schemas/cloudevent.schema.json (id, source, type, time …)",
        P,
        Origin.EVENT,
    ),
    KeyInfo(
        "unsupported_content_type",
        "the CloudEvent's data is not JSON (datacontenttype, data_base64, a batch or a non-JSON envelope)",
        P,
        Origin.EVENT,
    ),
    KeyInfo("cloudevent_without_data", "the CloudEvent carries no data (the event object)", P, Origin.EVENT),
    KeyInfo(
        "invalid_notification",
        "the value is not an S3/MinIO or COS notification (schemas/s3-notification, cos-notification)",
        P,
        Origin.EVENT,
    ),
    KeyInfo("s3_test_event", "the s3:TestEvent a bucket sends when notifications are configured", P, Origin.EVENT),
    KeyInfo("not_object_created", "the notification is about another event than an object created", P, Origin.EVENT),
    KeyInfo("not_an_image", "the object is not an image (content type, extension, empty or a folder)", P, Origin.EVENT),
    KeyInfo("object_too_large", "the object is larger than the face API accepts", P, Origin.EVENT),
    KeyInfo(
        "unsafe_object_key",
        "the object key has a '.', '..' or empty segment: its URL could resolve to another object or bucket",
        P,
        Origin.EVENT,
    ),
    KeyInfo("several_records", "the notification holds more than one record (one output per input)", P, Origin.EVENT),
)

#: Every fixed key (the ``http_<status>`` families are answered by :func:`lookup`).
REGISTRY: dict[str, KeyInfo] = {
    **{
        str(c.code): KeyInfo(
            str(c.code), c.meaning, c.error_class, Origin.SERVICE, c.check, c.about_groups, c.rate_limited, Api.V1
        )
        for c in _TABLE
    },
    **{
        c.code: KeyInfo(
            c.code, c.meaning, c.error_class, Origin.SERVICE, c.check, c.about_groups, c.rate_limited, Api.IAI
        )
        for c in _IAI_TABLE
    },
    **{k.key: k for k in _KEYS},
}

# An IAI code: a dotted name whose first part starts with a capital letter (``AuthFailure.SignatureFailure``), at
# most 64 characters (a dead-letter key's limit). Disjoint from v1's integers and from every lower-case key.
_IAI_CODE = re.compile(r"[A-Z][A-Za-z0-9]*(?:\.[A-Za-z0-9_-]+)*")
IAI_CODE_MAX = 64


@dataclass(frozen=True)
class _Family:
    """IAI codes not in the table, by their first part: what a new code of a known kind is."""

    prefix: str
    meaning: str
    error_class: ErrorClass
    check: str | None = None
    rate_limited: bool = False
    dotted: bool = True  # only ``<prefix>`` and ``<prefix>.*``; False: any code that starts with ``prefix``


# A new authentication, account or permission code will not pass by retrying; a new rate-limit code is a rate
# limit. Anything else unknown is transient (as an unknown v1 code is): retried within the budget, then
# dead-lettered under its own code, so nothing is lost and the key shows it.
_IAI_FAMILIES: tuple[_Family, ...] = (
    _Family("AuthFailure", "authentication failed", C, check=f"{_CREDENTIALS} and {_IAI_TOKEN}"),
    _Family("ResourceUnavailable", "the account's resource is unavailable", C, check=_IAI_ACCOUNT),
    _Family("ResourceInsufficient", "insufficient resources", C, check=_IAI_ACCOUNT),
    _Family("UnauthorizedOperation", "unauthorised operation", C, check=_IAI_CAM),
    _Family("RequestLimitExceeded", "rate limited", T, rate_limited=True, dotted=False),
)

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
#: Dead-letter keys of events refused before any call (worker.core.records.parse_event, worker.core.formats).
INVALID_CODES: frozenset[str] = frozenset(k for k, i in REGISTRY.items() if i.origin is Origin.EVENT)
#: Codes about the configured groups: a config error for the default groups, the event's fault for its own.
GROUP_CODES: frozenset[str] = frozenset(k for k, i in REGISTRY.items() if i.about_groups)


def is_iai_code(key: str) -> bool:
    """Is ``key`` spelt like an IAI error code (whether or not the registry knows it)?"""
    return len(key) <= IAI_CODE_MAX and _IAI_CODE.fullmatch(key) is not None


def class_of_iai_code(code: str) -> ErrorClass:
    """Class of an IAI code: the table's, else its family's, else transient (like an unknown v1 code)."""
    info = lookup(code) if is_iai_code(code) else None
    return info.error_class if info else T


def _iai_unlisted(key: str) -> KeyInfo:
    for family in _IAI_FAMILIES:
        if key == family.prefix or key.startswith(family.prefix + "." if family.dotted else family.prefix):
            return KeyInfo(
                key,
                f"{family.meaning} (an IAI {family.prefix} code the registry does not list)",
                family.error_class,
                Origin.SERVICE,
                family.check,
                rate_limited=family.rate_limited,
                api=Api.IAI,
            )
    return KeyInfo(key, "an IAI error code the registry does not list", T, Origin.SERVICE, api=Api.IAI)


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
    """The registry's entry for a dead-letter key, the ``http_<status>`` families and every IAI-spelt code
    included (an unlisted one by its family: see ``_IAI_FAMILIES``); None if unknown."""
    info = REGISTRY.get(key)
    if info is not None:
        return info
    if is_iai_code(key):
        return _iai_unlisted(key)
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
