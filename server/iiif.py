"""IIIF Image API 3.0 without I/O: the request parameters, the crop box, the output size, the layers and info.json.

https://iiif.io/api/image/3.0/ — the routes are in server/routers/iiif.py, the details in docs/iiif.md.
A parameter that is malformed answers 400, one that is valid IIIF but not served here answers 501.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from server.errors import ApiError

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROTOCOL = "http://iiif.io/api/image"
PROFILE = "level2"
JSON_LD = f'application/ld+json;profile="{CONTEXT}"'
# Output formats: IIIF name -> (Pillow format, media type).
FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
}
# The widest and tallest picture each format can hold (JPEG's 16-bit sizes, WebP's 14-bit ones).
LARGEST_SIDE = {"jpg": 65535, "png": 2**31 - 1, "webp": 16383}
# Formats the spec names that this server does not write: 501, not 400.
KNOWN_FORMATS = {"tif", "gif", "pdf", "jp2"}
QUALITIES = ("default", "color", "gray", "bitonal")
EXTRA_FEATURES = ["mirroring", "sizeUpscaling"]
# Upscaled (^) answers are bounded by this many pixels; never below the picture's own area.
MAX_UPSCALED_AREA = 1 << 24
# Layers that a downscaled answer may leave out, by downscale factor (region size / output size): the most
# that keep it within 0.1 dB PSNR of the all-layer answer. Measured on Kodak with weights/codec.pt
# (docs/iiif.md): the last layer still adds 1.4 to 2.4 dB at every factor up to 1/32, so none may.
LAYERS_SPARED = ((1, 0), (2, 0), (4, 0), (8, 0))

Box = tuple[int, int, int, int]

# Digits are bounded so that no arithmetic on them overflows a float.
_NUMBER = r"(?:[0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9})"
_PIXELS = re.compile(r"([0-9]{1,9}),([0-9]{1,9}),([0-9]{1,9}),([0-9]{1,9})")
_PERCENT = re.compile(rf"pct:({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})")
_SIZE = re.compile(r"(\^)?(?:(max)|pct:(" + _NUMBER + r")|(!)?([0-9]{1,9})?,([0-9]{1,9})?)")
_ROTATION = re.compile(rf"(!)?({_NUMBER})")


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def not_implemented(message: str) -> ApiError:
    return ApiError(501, "not_implemented", message)


def parse_region(text: str, width: int, height: int) -> Box:
    """The crop box (x, y, w, h) inside a width x height picture; a box reaching past the edge is cut there."""
    if text == "full":
        return (0, 0, width, height)
    if text == "square":
        side = min(width, height)
        return ((width - side) // 2, (height - side) // 2, side, side)
    if match := _PIXELS.fullmatch(text):
        x, y, w, h = (int(group) for group in match.groups())
    elif match := _PERCENT.fullmatch(text):
        px, py, pw, ph = (float(group) for group in match.groups())
        x, y = math.floor(px * width / 100), math.floor(py * height / 100)
        w, h = round(pw * width / 100), round(ph * height / 100)
    else:
        raise bad("region must be full, square, x,y,w,h or pct:x,y,w,h")
    if w == 0 or h == 0:
        raise bad("the region has no pixels")
    if x >= width or y >= height:
        raise bad(f"the region starts outside the {width}x{height} picture")
    return (x, y, min(w, width - x), min(h, height - y))


def parse_size(text: str, region_width: int, region_height: int, max_area: int) -> tuple[int, int]:
    """The output (width, height) of a region; 400 for an upscale without `^` or past `max_area`."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise bad("size must be max, w,, ,h, pct:n, w,h or !w,h, each optionally after ^")
    upscale, maximum, percent, confined, w_text, h_text = match.groups()
    ratio = region_width / region_height
    if maximum:
        width, height = region_width, region_height
        if upscale or width * height > max_area:
            scale = math.sqrt(max_area / (width * height))
            width, height = math.floor(width * scale), math.floor(height * scale)
    elif percent is not None:
        scale = float(percent) / 100
        width, height = round(region_width * scale), round(region_height * scale)
    elif w_text is None and h_text is None:
        raise bad("size needs a width, a height or both")
    elif confined:
        if w_text is None or h_text is None:
            raise bad("!w,h needs both a width and a height")
        box_width, box_height = int(w_text), int(h_text)
        scale = min(box_width / region_width, box_height / region_height)
        width = min(box_width, round(region_width * scale))
        height = min(box_height, round(region_height * scale))
    elif h_text is None:
        width = int(w_text)
        height = round(width / ratio)
    elif w_text is None:
        height = int(h_text)
        width = round(height * ratio)
    else:
        width, height = int(w_text), int(h_text)
    if width < 1 or height < 1:
        raise bad(f"the answer would be {width}x{height}: no pixels")
    if not upscale and (width > region_width or height > region_height):
        raise bad(f"{width}x{height} is larger than the {region_width}x{region_height} region: ask with ^")
    if width * height > max_area:
        raise bad(f"{width}x{height} is more than the {max_area} pixels of maxArea")
    return (width, height)


@dataclass(frozen=True)
class Rotation:
    mirror: bool
    degrees: int  # clockwise: 0, 90, 180 or 270


def parse_rotation(text: str) -> Rotation:
    """Mirroring then a clockwise quarter turn; other angles are valid IIIF but not served (501)."""
    match = _ROTATION.fullmatch(text)
    if not match:
        raise bad("rotation must be a number of degrees, optionally after !")
    angle = float(match.group(2))
    if angle > 360:
        raise bad("rotation must be within 0..360 degrees")
    if angle % 90:
        raise not_implemented("only rotations by multiples of 90 degrees are served")
    return Rotation(mirror=match.group(1) is not None, degrees=int(angle) % 360)


def parse_quality_format(text: str) -> tuple[str, str]:
    """`quality.format`: (quality, format); an unknown quality or format is 400, a known unserved format 501."""
    quality, dot, fmt = text.rpartition(".")
    if not dot:
        raise bad("the last segment must be quality.format, e.g. default.jpg")
    if quality not in QUALITIES:
        raise bad(f"quality must be one of {', '.join(QUALITIES)}")
    if fmt in KNOWN_FORMATS:
        raise not_implemented(f"format {fmt} is not served; ask for {', '.join(FORMATS)}")
    if fmt not in FORMATS:
        raise bad(f"format must be one of {', '.join(FORMATS)}")
    return quality, fmt


def check_fits(size: tuple[int, int], fmt: str) -> None:
    """400 for an answer wider or taller than its format can hold, before anything is decoded."""
    if max(size) > LARGEST_SIDE[fmt]:
        raise bad(f"a {fmt} picture is at most {LARGEST_SIDE[fmt]} pixels wide and tall; ask for png")


def max_area(width: int, height: int) -> int:
    """maxArea of a picture: its own area, or `MAX_UPSCALED_AREA` when that is more."""
    return max(width * height, MAX_UPSCALED_AREA)


def layers_for(layer_count: int, region: Box, size: tuple[int, int]) -> int:
    """The layers a region shown at `size` needs, by the measured table `LAYERS_SPARED`."""
    factor = min(region[2] / size[0], region[3] / size[1])
    spared = max((spared for least, spared in LAYERS_SPARED if factor >= least), default=0)  # default: upscaled
    return max(1, layer_count - spared)


def scale_factors(width: int, height: int, tile: int) -> list[int]:
    """Powers of two down to the one at which the whole picture fits in one tile."""
    factors = [1]
    while math.ceil(width / factors[-1]) > tile or math.ceil(height / factors[-1]) > tile:
        factors.append(factors[-1] * 2)
    return factors


def info_document(base: str, width: int, height: int, tile: int) -> dict:
    """The Image Information document (info.json) of the picture whose IIIF base URI is `base`."""
    factors = scale_factors(width, height, tile)
    return {
        "@context": CONTEXT,
        "id": base,
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": PROFILE,
        "width": width,
        "height": height,
        "maxArea": max_area(width, height),
        "sizes": [
            {"width": math.ceil(width / factor), "height": math.ceil(height / factor)} for factor in reversed(factors)
        ],
        "tiles": [{"width": tile, "scaleFactors": factors}],
        "extraQualities": ["bitonal"],
        "extraFormats": ["webp"],
        "extraFeatures": EXTRA_FEATURES,
    }
