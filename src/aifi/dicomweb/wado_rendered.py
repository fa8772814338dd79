"""WADO-RS rendered resources and thumbnails (PS3.18 §10.4.1.1.3, query parameters §8.3.5;
Supplement 203): ``…/rendered`` at every level and ``…/frames/{list}/rendered``, and
``…/thumbnail`` at every level, as ``image/jpeg`` (default) or ``image/png``
(:mod:`aifi.dicomweb.rendering` draws them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.background import BackgroundTask

from aifi.dicomweb import rendering
from aifi.dicomweb.frames import parse_frame_list
from aifi.dicomweb.store import StoredInstance
from aifi.dicomweb.wado_bodies import Part, stream_parts
from aifi.dicomweb.wado_request import (
    FRAMES,
    INSTANCE,
    MULTIPART,
    SERIES,
    STUDY,
    Ctx,
    RetrieveContext,
    open_reader,
)
from aifi.errors import HubError, NotAcceptable, NotFound

log = logging.getLogger("aifi.dicomweb.wado")

router = APIRouter()


# -- rendered resources and thumbnails (PS3.18 §10.4.1.1.3, §8.3.5, Supplement 203) -------


def _render_params(ctx: RetrieveContext) -> rendering.RenderParams:
    """The rendered media type (PS3.18 §8.7.4) and the §8.3.5 query parameters."""
    media = None
    for r in ctx.accept():
        candidate = r.related_type if r.mime == MULTIPART else r.mime
        if candidate in rendering.RENDERED_MEDIA_TYPES:
            media = candidate
        elif candidate in ("*/*", "image/*", "multipart/*"):
            media = "image/jpeg"
        if media:
            break
    if media is None:
        raise NotAcceptable("Rendered images are available as image/jpeg or image/png")
    q = ctx.request.query_params
    return rendering.RenderParams(
        media_type=media,
        quality=rendering.parse_quality(q["quality"])
        if "quality" in q
        else rendering.DEFAULT_QUALITY,
        window=rendering.parse_window(q["window"]) if "window" in q else None,
        viewport=rendering.parse_viewport(q["viewport"]) if "viewport" in q else None,
    )


def _render_one(
    inst: StoredInstance,
    params: rendering.RenderParams,
    number: int | None = None,
    bound: int | None = None,
) -> bytes | None:
    """One frame rendered (default: the first; the middle one for a thumbnail), or
    ``None`` when the instance has no pixel data."""
    with open_reader(inst) as reader:
        if not reader.has_pixels:
            return None
        if number is None:
            number = (reader.number_of_frames + 1) // 2 if bound else 1
        return rendering.render(reader.array(number), reader.header, number - 1, params, bound)


def _rendered_many(instances: list[StoredInstance], params: rendering.RenderParams) -> Response:
    """A study or series rendered: one part per instance with pixel data (its first
    frame); instances that cannot be rendered are left out (and logged)."""
    first, rest = None, iter(instances)
    for inst in rest:
        first = _render_one(inst, params)
        if first is not None:
            break
    if first is None:
        raise NotAcceptable("Nothing here has pixel data that can be rendered as an image")

    def images() -> Iterator[bytes]:
        yield first
        for inst in rest:
            try:
                image = _render_one(inst, params)
            except HubError as exc:
                log.warning("cannot render an instance: %s", exc.reason)
                log.debug("the instance not rendered is %s", inst.sop_instance_uid)
                continue
            if image is not None:
                yield image

    return stream_parts(((params.media_type, {}, [i]) for i in images()), params.media_type)


@router.get(STUDY + "/rendered", summary="Retrieve Rendered Study (WADO-RS)")
def rendered_study(study: str, ctx: Ctx) -> Response:
    params = _render_params(ctx)
    return _rendered_many(ctx.find(study), params)


@router.get(SERIES + "/rendered", summary="Retrieve Rendered Series (WADO-RS)")
def rendered_series(study: str, series: str, ctx: Ctx) -> Response:
    params = _render_params(ctx)
    return _rendered_many(ctx.find(study, series), params)


@router.get(INSTANCE + "/rendered", summary="Retrieve Rendered Instance (WADO-RS)")
def rendered_instance(study: str, series: str, instance: str, ctx: Ctx) -> Response:
    """The instance's first frame; other frames via ``…/frames/{n}/rendered``."""
    params = _render_params(ctx)
    [inst] = ctx.find(study, series, instance)
    image = _render_one(inst, params)
    if image is None:
        raise NotAcceptable("The instance has no pixel data that can be rendered as an image")
    return Response(image, media_type=params.media_type)


@router.get(FRAMES + "/rendered", summary="Retrieve Rendered Frames (WADO-RS)")
def rendered_frames(study: str, series: str, instance: str, frames: str, ctx: Ctx) -> Response:
    """One frame: a single image; several: one part per frame, in the order asked."""
    numbers = parse_frame_list(frames)
    params = _render_params(ctx)
    [inst] = ctx.find(study, series, instance)
    reader = open_reader(inst)

    def render(number: int) -> bytes:
        return rendering.render(reader.array(number), reader.header, number - 1, params)

    try:
        reader.check_frames(numbers)
        first = render(numbers[0])
    except BaseException:
        reader.close()
        raise
    if len(numbers) == 1:
        reader.close()
        return Response(first, media_type=params.media_type)
    images = (first if i == 0 else render(n) for i, n in enumerate(numbers))
    parts: Iterator[Part] = ((params.media_type, {}, [image]) for image in images)
    return stream_parts(parts, params.media_type, BackgroundTask(reader.close))


def _thumbnail(
    ctx: RetrieveContext, instances: list[StoredInstance], number: int | None = None
) -> Response:
    """A small representative image (PS3.18 Thumbnail resources, Supplement 203): per series the
    middle instance (and frame) first; at most :data:`~aifi.dicomweb.rendering.THUMBNAIL_SIZE`
    pixels a side unless a ``viewport`` asks otherwise; nothing drawn on it."""
    params = _render_params(ctx)
    by_series: dict[str, list[StoredInstance]] = {}
    for inst in instances:
        by_series.setdefault(inst.series_instance_uid, []).append(inst)
    for members in by_series.values():
        middle = (len(members) - 1) // 2
        for inst in [members[middle], *members[:middle], *members[middle + 1 :]]:
            image = _render_one(inst, params, number, bound=rendering.THUMBNAIL_SIZE)
            if image is not None:
                return Response(image, media_type=params.media_type)
    raise NotFound("Nothing here has pixel data to make a thumbnail from")


@router.get(STUDY + "/thumbnail", summary="Retrieve Study Thumbnail (WADO-RS)")
def study_thumbnail(study: str, ctx: Ctx) -> Response:
    return _thumbnail(ctx, ctx.find(study))


@router.get(SERIES + "/thumbnail", summary="Retrieve Series Thumbnail (WADO-RS)")
def series_thumbnail(study: str, series: str, ctx: Ctx) -> Response:
    return _thumbnail(ctx, ctx.find(study, series))


@router.get(INSTANCE + "/thumbnail", summary="Retrieve Instance Thumbnail (WADO-RS)")
def instance_thumbnail(study: str, series: str, instance: str, ctx: Ctx) -> Response:
    return _thumbnail(ctx, ctx.find(study, series, instance))


@router.get(FRAMES + "/thumbnail", summary="Retrieve Frames Thumbnail (WADO-RS)")
def frames_thumbnail(study: str, series: str, instance: str, frames: str, ctx: Ctx) -> Response:
    numbers = parse_frame_list(frames)
    [inst] = ctx.find(study, series, instance)
    with open_reader(inst) as reader:
        reader.check_frames(numbers)
    return _thumbnail(ctx, [inst], numbers[0])
