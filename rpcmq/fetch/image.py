"""Check that a downloaded file is a picture, with Pillow."""

import io
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from rpcmq.fetch.errors import NotAnImage, TooLarge

__all__ = ['ImageInfo', 'inspect', 'describe', 'extension', 'sniff_format']

# Pillow format name (lower case) -> file extension, where they differ.
_EXTENSIONS = {'jpeg': 'jpg', 'tiff': 'tif', 'jpeg2000': 'jp2'}

_MAGIC = (
    (b'\x89PNG\r\n\x1a\n', 'PNG image'),
    (b'\xff\xd8\xff', 'JPEG image'),
    (b'GIF8', 'GIF image'),
    (b'BM', 'BMP image'),
    (b'II*\x00', 'TIFF image'),
    (b'MM\x00*', 'TIFF image'),
    (b'%PDF', 'PDF document'),
    (b'\x1f\x8b', 'gzip archive'),
    (b'PK\x03\x04', 'ZIP archive'),
)


class ImageInfo(NamedTuple):
    """What Pillow found; ``format`` is its format name in lower case."""

    format: str
    width: int
    height: int


def extension(fmt):
    """File extension for a Pillow format name: ``'jpeg'`` -> ``'jpg'``."""
    fmt = (fmt or '').lower()
    return _EXTENSIONS.get(fmt, fmt)


def describe(head, content_type=None, formats=None):
    """Say in words what a body starting with ``head`` looks like.

    A picture whose format is not in ``formats`` (Pillow names) is named
    as such; one whose format is accepted must be truncated or corrupt.
    """
    text = head.lstrip(b'\xef\xbb\xbf \t\r\n').lower()
    if not head:
        kind = 'an empty body'
    elif text.startswith((b'<!doctype html', b'<html', b'<head', b'<body')):
        kind = 'an HTML document'
    elif text.startswith((b'<?xml', b'<svg')):
        kind = 'an XML or SVG document'
    elif text.startswith((b'{', b'[')):
        kind = 'JSON or other text'
    else:
        name = _sniff(head)
        fmt = name.split()[0].lower() if name else None
        accepted = [f.lower() for f in formats or ()]
        if name is None:
            kind = 'unrecognised data'
        elif not name.endswith('image'):
            kind = 'a ' + name
        elif formats is None or fmt in accepted:
            kind = 'a truncated or corrupt ' + name
        else:
            kind = 'a %s, not one of the accepted image_formats (%s)' % (
                name, ', '.join(accepted))
    return '%s (Content-Type %s, first bytes %r)' % (
        kind, content_type or 'not given', bytes(head[:24]))


def sniff_format(head):
    """The Pillow format name (lower case) a body starting with ``head``
    announces by its magic bytes, or None; only :func:`inspect` says
    whether it really is one."""
    name = _sniff(head)
    if name is None or not name.endswith(' image'):
        return None
    return name.split()[0].lower()


def _sniff(head):
    if head.startswith(b'RIFF') and head[8:12] == b'WEBP':
        return 'WEBP image'
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def inspect(path, url, formats, max_pixels, content_type=None):
    """Open and verify the image at ``path`` (or in ``path``, bytes);
    return its :class:`ImageInfo`.

    Only Pillow plugins for ``formats`` are tried, which keeps exotic
    parsers away from untrusted data.

    :raises NotAnImage: not a picture in ``formats``, or truncated/corrupt.
    :raises TooLarge: more than ``max_pixels`` pixels (decompression bomb).
    """
    formats = [f.upper() for f in formats]
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    try:
        with Image.open(source, formats=formats) as img:
            fmt, (width, height) = img.format, img.size
            if width * height > max_pixels:
                raise _too_many_pixels(url, width, height, max_pixels)
            img.verify()
    except Image.DecompressionBombError as exc:
        # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS) came first.
        raise TooLarge('%s is too large: %s' % (url, exc), url=url,
                       limit=max_pixels, size=None, unit='pixels') from None
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError,
            IndexError, EOFError) as exc:
        if isinstance(path, bytes):
            head = path[:64]
        else:
            with open(path, 'rb') as f:
                head = f.read(64)
        found = describe(head, content_type, formats)
        if not isinstance(exc, UnidentifiedImageError):
            found += '; Pillow says: %s' % exc
        raise NotAnImage(url=url, found=found,
                         content_type=content_type) from None
    fmt = fmt.lower()
    # Pillow names camera JPEGs carrying extra frames 'MPO'; they are JPEGs.
    return ImageInfo('jpeg' if fmt == 'mpo' else fmt, width, height)


def _too_many_pixels(url, width, height, limit):
    size = width * height
    message = ('%s is too large: %d x %d = %d pixels, over the limit of %d '
               'pixels (decompression bomb guard); raise [image] '
               'max_image_pixels if such images are expected'
               % (url, width, height, size, limit))
    return TooLarge(message, url=url, limit=limit, size=size, unit='pixels')
