"""The thirteen IAI actions of the emulator over the shared engine, detection cache, gallery and image downloader.

Each action takes the account's gallery space and its request's :class:`~worker.emulator.iai_wire.Params`, and
returns the answer's fields (without ``RequestId``) or raises :class:`~worker.emulator.iai_wire.IaiError`.
Semantics beyond the SDK's field names (docs/api-notes.md#iai-the-current-api-searchfaces):

* groups exist only once created (``InvalidParameterValue.GroupIdNotExist``); a PersonId is unique per
  account; a person holds at most five faces, CreateFace takes at most four images;
* images: ``Url`` wins over ``Image``; a download failure → ``FailedOperation.ImageDownloadError``; over 5 MB
  base64-encoded → ``FailedOperation.ImageSizeExceed``; GIF or undecodable → ``FailedOperation.ImageDecodeFailed``;
  no face → ``InvalidParameterValue.NoFaceInPhoto``;
* search: groups without faces → ``InvalidParameterValue.NoFaceInGroups``; faces largest first, those under
  ``MinFaceSize`` (never under 34 px) skipped, none left → ``FailedOperation.FaceSizeTooSmall``; the first
  ``MaxFaceNum`` (default 1, over 10 → ``FailedOperation.SearchFacesExceed``) are searched; ``QualityControl`` q
  fails a face whose shorter side is under ``QUALITY_MIN_SIDE[q]`` px (RetCode -1601, no candidates); up to
  ``MaxPersonNum`` (default 5) candidates, Score = :func:`~worker.emulator.iai_wire.iai_score` of the engine's
  confidence; SearchFaces keeps Scores above ``FaceMatchThreshold``, SearchPersons at or above it and answers
  ``FaceId`` ""; ``NeedPersonInfo`` 1 adds PersonName, Gender and PersonGroupInfos;
* ``GroupExDescriptions`` and ``PersonExDescriptionInfos`` are accepted and not kept; ``NeedRotateDetection``
  is accepted and has no effect (synthetic faces are upright; the dlib engine turns photos upright by their EXIF
  orientation and finds frontal faces only).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image as PILImage

from worker.api.images import GIF, sniff_image_type
from worker.emulator import iai_wire as w
from worker.emulator.detector import Detector
from worker.emulator.download import DownloadError, UrlDownloader
from worker.emulator.faces import DetectedFace, FaceEngine, ImageError, Vector
from worker.emulator.gallery import Candidate, Gallery
from worker.emulator.iai_wire import IaiError, Params

Payload = dict[str, Any]
Action = Callable[[str, Params], Awaitable[Payload]]
MODEL = w.FACE_MODEL_VERSION


def _side(face: DetectedFace) -> int:
    return min(face.rect.width, face.rect.height)


def _rect(face: DetectedFace) -> dict[str, Any]:
    return dict(w.face_rect(*face.rect))


def _image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the image's header (the image decoded already: the faces were found in it)."""
    with PILImage.open(io.BytesIO(data)) as image:
        return image.size


class IaiActions:
    """The actions by name (:attr:`table`); call them from the event loop only (the gallery is loop-confined)."""

    def __init__(
        self,
        gallery: Gallery,
        engine: FaceEngine,
        detector: Detector,
        downloader: UrlDownloader,
    ) -> None:
        self._gallery = gallery
        self._engine = engine
        self._detector = detector
        self._downloader = downloader
        self.table: dict[str, Action] = {
            "SearchFaces": self._search_faces,
            "SearchPersons": self._search_persons,
            "CreateGroup": self._create_group,
            "GetGroupList": self._get_group_list,
            "DeleteGroup": self._delete_group,
            "CreatePerson": self._create_person,
            "GetPersonList": self._get_person_list,
            "DeletePerson": self._delete_person,
            "GetPersonBaseInfo": self._get_person_base_info,
            "DetectFace": self._detect_face,
            "GetPersonGroupInfo": self._get_person_group_info,
            "CreateFace": self._create_face,
            "DeleteFace": self._delete_face,
        }

    # --- images and faces --------------------------------------------------------------------------------------

    async def _image(self, url: str | None, image: str | None) -> bytes:
        """``Url`` wins over ``Image``; neither → ImageEmpty."""
        if url:
            if not url.lower().startswith(("http://", "https://")):
                raise IaiError("InvalidParameterValue.UrlIllegal")
            try:
                data = await self._downloader.download(url)
            except DownloadError as exc:
                raise IaiError("FailedOperation.ImageDownloadError", f"Image download failed: {exc}") from exc
            if w.base64_length(len(data)) > w.MAX_IMAGE_BASE64:
                raise IaiError("FailedOperation.ImageSizeExceed")
            return data
        if image is None:
            raise IaiError("InvalidParameterValue.ImageEmpty", "Neither `Url` nor `Image` is given.")
        return w.decode_image(image)

    async def _faces(self, data: bytes) -> tuple[DetectedFace, ...]:
        """Faces largest first (cached by the bytes' sha1); undecodable or GIF → ImageDecodeFailed."""
        if sniff_image_type(data) == GIF:
            raise IaiError("FailedOperation.ImageDecodeFailed", "GIF images are not supported.")
        _, result = await self._detector.detect(data)
        if isinstance(result, ImageError):
            raise IaiError(w.iai_code(result.code))
        return result

    async def _largest_face(self, params: Params, quality: int) -> DetectedFace:
        faces = await self._faces(await self._image(params.text("Url"), params.text("Image")))
        if not faces:
            raise IaiError("InvalidParameterValue.NoFaceInPhoto")
        if _side(faces[0]) < w.DEFAULT_MIN_FACE_SIZE:
            raise IaiError("FailedOperation.FaceSizeTooSmall")
        if _side(faces[0]) < w.QUALITY_MIN_SIDE[quality]:
            raise IaiError("FailedOperation.FaceQualityNotQualified")
        return faces[0]

    def _check_group(self, space: str, group_id: str) -> None:
        if not self._gallery.has_group(space, group_id):
            raise IaiError("InvalidParameterValue.GroupIdNotExist", f"The group `{group_id[:64]}` does not exist.")

    def _check_person(self, space: str, person_id: str) -> None:
        if not self._gallery.has_person(space, person_id):
            raise IaiError("InvalidParameterValue.PersonIdNotExist", f"The person `{person_id[:64]}` does not exist.")

    @staticmethod
    def _quality(params: Params) -> int:
        return params.bounded("QualityControl", 0, 0, 4, "InvalidParameterValue.QualityControlIllegal")

    # --- search -----------------------------------------------------------------------------------------------------

    async def _search_faces(self, space: str, params: Params) -> Payload:
        return await self._search(space, params, persons=False)

    async def _search_persons(self, space: str, params: Params) -> Payload:
        return await self._search(space, params, persons=True)

    async def _search(self, space: str, params: Params, *, persons: bool) -> Payload:
        # The fields first (no state needed), then the groups, then the image.
        group_ids = params.texts("GroupIds", required=True)
        if len(group_ids) > w.MAX_GROUP_IDS:
            raise IaiError("InvalidParameterValue.GroupIdsExceed")
        max_faces = params.integer("MaxFaceNum", 1)
        if max_faces > w.MAX_FACE_NUM:
            raise IaiError("FailedOperation.SearchFacesExceed")
        if max_faces < 1:
            raise IaiError("InvalidParameterValue", "`MaxFaceNum` must be at least 1.")
        min_size = max(params.integer("MinFaceSize", w.DEFAULT_MIN_FACE_SIZE), w.DEFAULT_MIN_FACE_SIZE)
        # The code for MaxPersonNum over 100 is a guess: Tencent documents none.
        max_persons = params.bounded("MaxPersonNum", 5, 1, w.MAX_PERSON_NUM, w.MAX_PERSON_NUM_ERROR)
        need_info = params.integer("NeedPersonInfo", 0) == 1  # "other values than 0 and 1 count as 0"
        quality = self._quality(params)
        threshold = params.number("FaceMatchThreshold", 0.0)
        if not 0.0 <= threshold <= 100.0 or (persons and threshold == 100.0):
            raise IaiError("InvalidParameterValue.FaceMatchThresholdIllegal")
        params.integer("NeedRotateDetection", 0)  # accepted; synthetic faces are never rotated
        for group_id in group_ids:
            self._check_group(space, group_id)
        person_num, face_num = self._gallery.size(space, group_ids)
        if face_num == 0:
            raise IaiError("InvalidParameterValue.NoFaceInGroups")
        detected = await self._faces(await self._image(params.text("Url"), params.text("Image")))
        if not detected:
            raise IaiError("InvalidParameterValue.NoFaceInPhoto")
        usable = [face for face in detected if _side(face) >= min_size]
        if not usable:
            raise IaiError("FailedOperation.FaceSizeTooSmall")
        chosen = usable[:max_faces]
        good = [face for face in chosen if _side(face) >= w.QUALITY_MIN_SIDE[quality]]
        found = self._gallery.search(space, group_ids, [f.vector for f in good], top_n=max_persons) if good else []
        matches = iter(found)
        results = []
        for face in chosen:
            if _side(face) < w.QUALITY_MIN_SIDE[quality]:
                results.append({"Candidates": [], "FaceRect": _rect(face), "RetCode": w.RET_QUALITY})
                continue
            candidates = []
            for match in next(matches):
                score = w.iai_score(match.confidence)
                if score > threshold or (persons and score == threshold):
                    candidates.append(self._candidate(space, match, score, persons=persons, need_info=need_info))
            results.append({"Candidates": candidates, "FaceRect": _rect(face), "RetCode": w.RET_OK})
        if persons:
            return {
                "Results": results,
                "PersonNum": person_num if good else 0,
                "FaceModelVersion": MODEL,
            }
        return {"Results": results, "FaceNum": face_num, "FaceModelVersion": MODEL}

    def _candidate(self, space: str, match: Candidate, score: float, *, persons: bool, need_info: bool) -> Payload:
        # SearchPersons fuses a person's faces: its FaceId "has no meaning" and is answered empty.
        out: Payload = {"PersonId": match.person_id, "FaceId": "" if persons else match.face_id, "Score": score}
        if need_info:
            person = self._gallery.get_person(space, match.person_id)
            groups = [{"GroupId": g, "PersonExDescriptions": []} for g in person.group_ids]
            out.update(PersonName=person.name, Gender=person.gender, PersonGroupInfos=groups)
        else:
            out.update(PersonName=None, Gender=None, PersonGroupInfos=None)
        return out

    # --- groups -------------------------------------------------------------------------------------------------

    async def _create_group(self, space: str, params: Params) -> Payload:
        group_id = w.check_id(params.required_text("GroupId"), "Group")
        name = w.check_name(params.required_text("GroupName"), "Group")
        tag = params.text("Tag") or ""
        if len(tag) > w.MAX_TAG_CHARS:
            raise IaiError("InvalidParameterValue.GroupTagTooLong")
        if len(params.texts("GroupExDescriptions")) > 5:  # accepted, not kept: the emulator has no descriptions
            raise IaiError("InvalidParameterValue.GroupExDescriptionsExceed")
        if params.text("FaceModelVersion") not in (None, MODEL):
            raise IaiError("InvalidParameterValue.FaceModelVersionIllegal", "The emulator offers model 3.0 only.")
        gallery = self._gallery
        if gallery.has_group(space, group_id):
            raise IaiError("InvalidParameterValue.GroupIdAlreadyExist")
        if any(info.name == name for info in gallery.group_infos(space)):
            raise IaiError("InvalidParameterValue.GroupNameAlreadyExist")
        gallery.create_group(space, group_id, name, tag)
        return {"FaceModelVersion": MODEL}

    @staticmethod
    def _page(params: Params, total: int) -> slice:
        offset = params.integer("Offset", 0)
        limit = params.integer("Limit", 10)
        if limit > w.MAX_LIST_LIMIT:
            raise IaiError("InvalidParameterValue.LimitExceed")
        if offset < 0 or limit < 0:
            raise IaiError("InvalidParameterValue", "`Offset` and `Limit` must not be negative.")
        if offset > total:
            raise IaiError("InvalidParameterValue.OffsetExceed")
        return slice(offset, offset + limit)

    async def _get_group_list(self, space: str, params: Params) -> Payload:
        infos = self._gallery.group_infos(space)
        page = infos[self._page(params, len(infos))]
        return {
            "GroupInfos": [
                {
                    "GroupName": i.name,
                    "GroupId": i.group_id,
                    "GroupExDescriptions": [],
                    "Tag": i.tag,
                    "FaceModelVersion": MODEL,
                    "CreationTimestamp": i.created_ms,
                    "UpdateTimestamp": i.created_ms,
                }
                for i in page
            ],
            "GroupNum": len(infos),
        }

    async def _delete_group(self, space: str, params: Params) -> Payload:
        group_id = params.required_text("GroupId")
        self._check_group(space, group_id)
        self._gallery.delete_group(space, group_id)
        return {}

    # --- persons and faces ------------------------------------------------------------------------------------

    async def _create_person(self, space: str, params: Params) -> Payload:
        group_id = params.required_text("GroupId")
        person_id = w.check_id(params.required_text("PersonId"), "Person")
        name = w.check_name(params.required_text("PersonName"), "Person")
        gender = params.bounded("Gender", 0, 0, 2, "InvalidParameterValue.PersonGenderIllegal")
        unique = params.bounded("UniquePersonControl", 0, 0, 4, "InvalidParameterValue.UniquePersonControlIllegal")
        quality = self._quality(params)
        params.integer("NeedRotateDetection", 0)
        self._check_group(space, group_id)
        gallery = self._gallery
        if gallery.has_person(space, person_id):  # unique per account, whatever the group
            raise IaiError("InvalidParameterValue.PersonIdAlreadyExist")
        face = await self._largest_face(params, quality)
        if unique:
            (best,) = gallery.search(space, [group_id], [face.vector], top_n=1)
            if best and w.iai_score(best[0].confidence) >= w.UNIQUE_PERSON_SCORE[unique]:
                # "the person is not created; the suspected same person is answered"
                similar = best[0].person_id
                return {"FaceId": "", "FaceRect": _rect(face), "SimilarPersonId": similar, "FaceModelVersion": MODEL}
        face_id, _ = gallery.new_person(space, person_id, [group_id], face, name, gender=gender)
        return {
            "FaceId": face_id,
            "FaceRect": _rect(face),
            "SimilarPersonId": "",
            "FaceModelVersion": MODEL,
        }

    async def _get_person_list(self, space: str, params: Params) -> Payload:
        group_id = params.required_text("GroupId")
        self._check_group(space, group_id)
        gallery = self._gallery
        person_ids = gallery.person_ids(space, group_id)
        infos = []
        for person_id in person_ids[self._page(params, len(person_ids))]:
            p = gallery.get_person(space, person_id)
            infos.append(
                {
                    "PersonName": p.name,
                    "PersonId": p.person_id,
                    "Gender": p.gender,
                    "PersonExDescriptions": [],
                    "FaceIds": list(p.face_ids),
                    "CreationTimestamp": p.created_ms,
                }
            )
        persons, faces = gallery.size(space, [group_id])
        return {"PersonInfos": infos, "PersonNum": persons, "FaceNum": faces, "FaceModelVersion": MODEL}

    async def _detect_face(self, space: str, params: Params) -> Payload:
        """Faces largest first, those under ``MinFaceSize`` (never under 34 px) left out, at most ``MaxFaceNum``
        (1 to 120); none → NoFaceInPhoto. Attributes and quality are not modelled: answered null."""
        max_faces = params.bounded("MaxFaceNum", 1, 1, w.MAX_DETECT_FACE_NUM)
        min_size = max(params.integer("MinFaceSize", w.DEFAULT_MIN_FACE_SIZE), w.DEFAULT_MIN_FACE_SIZE)
        for flag in ("NeedFaceAttributes", "NeedQualityDetection", "NeedRotateDetection"):
            params.integer(flag, 0)
        if params.text("FaceModelVersion") not in (None, MODEL):
            raise IaiError("InvalidParameterValue.FaceModelVersionIllegal", "The emulator offers model 3.0 only.")
        data = await self._image(params.text("Url"), params.text("Image"))
        faces = [face for face in await self._faces(data) if _side(face) >= min_size][:max_faces]
        if not faces:
            raise IaiError("InvalidParameterValue.NoFaceInPhoto")
        width, height = _image_size(data)
        return {
            "ImageWidth": width,
            "ImageHeight": height,
            "FaceInfos": [_rect(f) | {"FaceAttributesInfo": None, "FaceQualityInfo": None} for f in faces],
            "FaceModelVersion": MODEL,
        }

    async def _get_person_base_info(self, space: str, params: Params) -> Payload:
        person_id = params.required_text("PersonId")
        self._check_person(space, person_id)
        p = self._gallery.get_person(space, person_id)
        return {"PersonName": p.name, "Gender": p.gender, "FaceIds": list(p.face_ids)}

    async def _get_person_group_info(self, space: str, params: Params) -> Payload:
        """Limit defaults to 10 and may be at most 100 (Tencent's documented range)."""
        person_id = params.required_text("PersonId")
        offset = params.integer("Offset", 0)
        limit = params.integer("Limit", 10)
        if limit > w.MAX_PERSON_GROUP_LIMIT:
            raise IaiError("InvalidParameterValue.LimitExceed")
        if offset < 0 or limit < 0:
            raise IaiError("InvalidParameterValue", "`Offset` and `Limit` must not be negative.")
        self._check_person(space, person_id)
        groups = list(self._gallery.get_person(space, person_id).group_ids)
        if offset > len(groups):
            raise IaiError("InvalidParameterValue.OffsetExceed")
        page = groups[offset : offset + limit]
        return {
            "PersonGroupInfos": [{"GroupId": g, "PersonExDescriptions": []} for g in page],
            "GroupNum": len(groups),
            "FaceModelVersion": MODEL,
        }

    async def _delete_person(self, space: str, params: Params) -> Payload:
        person_id = params.required_text("PersonId")
        self._check_person(space, person_id)
        self._gallery.del_person(space, person_id)
        return {}

    async def _create_face(self, space: str, params: Params) -> Payload:
        """Per image a RetCode: 0, -1101 no face, -1102 undecodable, -1109 face under 34 px, -1601 quality,
        -1604 not similar enough to the person's faces. A download failure fails the whole request."""
        person_id = params.required_text("PersonId")
        urls, images = params.texts("Urls"), params.texts("Images")
        threshold = params.number("FaceMatchThreshold", 60.0)
        if not 0.0 <= threshold <= 100.0:
            raise IaiError("InvalidParameterValue.FaceMatchThresholdIllegal")
        quality = self._quality(params)
        params.integer("NeedRotateDetection", 0)
        self._check_person(space, person_id)
        sources: list[tuple[str | None, str | None]] = [(u, None) for u in urls] or [(None, i) for i in images]
        if not sources:
            raise IaiError("InvalidParameterValue.ImageEmpty", "Neither `Urls` nor `Images` is given.")
        if len(sources) > w.MAX_IMAGES_PER_CREATE_FACE:
            raise IaiError("InvalidParameterValue.UploadFaceNumExceed")
        gallery = self._gallery
        person = gallery.get_person(space, person_id)
        if len(person.face_ids) + len(sources) > w.MAX_FACES_PER_PERSON:
            raise IaiError("InvalidParameterValue.PersonFaceNumExceed")
        known = [gallery.face(space, f).vector for f in person.face_ids]
        items: list[DetectedFace | int] = []
        for url, image in sources:
            try:
                faces = await self._faces(await self._image(url, image))
            except IaiError as error:
                if error.code != "FailedOperation.ImageDecodeFailed":
                    raise
                items.append(w.RET_UNDECODABLE)
                continue
            items.append(self._face_code(faces, known, quality, threshold))
        added, codes = gallery.add_faces(space, person_id, items, max_faces=w.MAX_FACES_PER_PERSON, duplicates=False)
        rects = [_rect(item) for item in items if isinstance(item, DetectedFace)]  # each one was added
        return {
            "SucFaceNum": len(added),
            "SucFaceIds": added,
            "RetCode": codes,
            "SucIndexes": [i for i, code in enumerate(codes) if code == w.RET_OK],
            "SucFaceRects": rects,
            "FaceModelVersion": MODEL,
        }

    def _face_code(
        self, faces: tuple[DetectedFace, ...], known: list[Vector], quality: int, threshold: float
    ) -> DetectedFace | int:
        if not faces:
            return w.RET_NO_FACE
        face = faces[0]
        if _side(face) < w.DEFAULT_MIN_FACE_SIZE:
            return w.RET_FACE_SIZE
        if _side(face) < w.QUALITY_MIN_SIDE[quality]:
            return w.RET_QUALITY
        best = max(self._engine.similarity(face.vector, vector) for vector in known) if known else 100.0
        return face if w.iai_score(best) > threshold else w.RET_NOT_SIMILAR

    async def _delete_face(self, space: str, params: Params) -> Payload:
        person_id = params.required_text("PersonId")
        face_ids = params.texts("FaceIds", required=True)
        self._check_person(space, person_id)
        gallery = self._gallery
        person = gallery.get_person(space, person_id)
        owned = [f for f in dict.fromkeys(face_ids) if f in person.face_ids]
        if owned and len(owned) == len(person.face_ids):
            raise IaiError("InvalidParameterValue.DeleteFaceNumExceed")
        deleted = gallery.del_faces(space, person_id, owned) if owned else []
        return {"SucDeletedNum": len(deleted), "SucFaceIds": deleted}
