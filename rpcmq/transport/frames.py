"""The frames of ``basic.publish`` and ``basic.ack``, packed with ``struct``.

py-amqp packs every frame through its generic serializer: a message's
properties are found by walking all fourteen of the basic class, each
frame's format string is built and parsed again, and the whole goes
through a shared buffer. For the two frames every call and cast costs
(a publish, an ack) that was a tenth of an eventlet server's time per
call. Here the properties' flags and field format are worked out once per
set of properties and field values go through one ``amqp.serialization.
dumps`` call (py-amqp's own encoding of strings and tables). The bytes are
exactly py-amqp's (the unit tests compare them for every kind of
property, body and frame size); ``writes.FrameWriter`` writes them.
"""

import struct

from amqp import spec
from amqp.basic_message import Message
from amqp.serialization import dumps

__all__ = ['FRAME_END', 'FRAME_HEADER', 'ack', 'publish']

FRAME_HEADER = struct.Struct('>BHI')  # frame type, channel, payload size
FRAME_END = 0xCE                      # the octet every frame ends with
_FRAME, _END = FRAME_HEADER, bytes([FRAME_END])
_METHOD, _HEADER, _BODY = 1, 2, 3
_PUBLISH = struct.pack('>HH', *spec.Basic.Publish)
_CONTENT = struct.Struct('>HHQ')   # class, weight, body size
_CLASS = spec.Basic.Publish[0]
# py-amqp splits a body in frames when the whole would not fit in one
# frame with this much room to spare (method_framing.FRAME_OVERHEAD)
_OVERHEAD = 40

# A whole basic.ack frame: type 1, channel, payload size 13, class and
# method, delivery tag, the ``multiple`` bit, the frame-end octet.
_ACK = struct.Struct('>BHIHHQBB')
_ACK_SIZE = 13

_RANK = {name: (15 - i, kind)
         for i, (name, kind) in enumerate(Message.PROPERTIES)}
_LAYOUTS = {}  # names of the properties, in the order given -> layout


def ack(channel_id, tag, multiple=False):
    """A ``basic.ack`` frame of ``tag`` on ``channel_id``."""
    return _ACK.pack(_METHOD, channel_id, _ACK_SIZE, spec.Basic.Ack[0],
                     spec.Basic.Ack[1], tag, 1 if multiple else 0, FRAME_END)


def publish(channel_id, frame_max, args, body, properties):
    """The frames of one ``basic.publish``, as bytes: ``args`` are its
    arguments serialized (``dumps('Bssbb', ...)``), ``body`` bytes (or
    text, encoded in UTF-8 as py-amqp does), ``properties`` those of the
    basic class that are set (py-amqp's names; None values are left out).
    Raises ValueError for a property the basic class does not have, and
    py-amqp's errors for values it cannot encode."""
    if isinstance(body, str):
        body = body.encode(properties.get('content_encoding') or 'utf-8')
    props = _properties(properties)
    method = _PUBLISH + args
    header = _CONTENT.pack(_CLASS, 0, len(body)) + props
    parts = [_FRAME.pack(_METHOD, channel_id, len(method)), method, _END,
             _FRAME.pack(_HEADER, channel_id, len(header)), header, _END]
    chunk = frame_max - 8
    if len(args) + len(props) + len(body) + _OVERHEAD <= chunk:
        if body:
            parts += [_FRAME.pack(_BODY, channel_id, len(body)), body, _END]
    else:
        for start in range(0, len(body), chunk):
            piece = body[start:start + chunk]
            parts += [_FRAME.pack(_BODY, channel_id, len(piece)), piece,
                      _END]
    return b''.join(parts)


def _properties(properties):
    """The content header's property flags and fields."""
    layout = _LAYOUTS.get(tuple(properties))
    if layout is None:
        layout = _layout(tuple(properties))
    flags, fmt, names = layout
    values = [properties[name] for name in names
              if properties[name] is not None]
    if len(values) < len(names):  # some are None: leave those out
        return _properties({name: value for name, value in
                            properties.items() if value is not None})
    return flags + dumps(fmt, values) if names else flags


def _layout(given):
    """(flags, format, names in flag order) of properties named ``given``;
    kept for the next message with the same names."""
    unknown = [name for name in given if name not in _RANK]
    if unknown:
        raise ValueError('AMQP basic messages have no property %s'
                         % ', '.join(map(repr, unknown)))
    names = sorted(given, key=lambda name: -_RANK[name][0])
    bits = 0
    for name in names:
        bits |= 1 << _RANK[name][0]
    layout = (struct.pack('>H', bits), ''.join(_RANK[name][1]
                                               for name in names), names)
    if len(_LAYOUTS) < 1024:  # a handful of call sites use a few sets
        _LAYOUTS[given] = layout
    return layout
