// The `metadata_props` of an ONNX file (ModelProto field 14: key/value strings), read straight
// from its protobuf bytes: what tlexport embeds (classes, preprocessing, architecture) without a
// protobuf library. Only the top-level message is walked; the graph is skipped by its length.

const METADATA_PROPS = 14;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function varint(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= bytes.length) throw new Error('not an ONNX file (truncated)');
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    if (!(b & 0x80)) return [value, pos];
    scale *= 128;
  }
  throw new Error('not an ONNX file (bad varint)');
}

// Visit each field of one message: visit(field, wireType, start, end) for length-delimited ones.
function fields(bytes, visit) {
  let pos = 0;
  while (pos < bytes.length) {
    let tag;
    [tag, pos] = varint(bytes, pos);
    const wire = tag % 8;
    const field = Math.floor(tag / 8);
    if (wire === 0) [, pos] = varint(bytes, pos);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let length;
      [length, pos] = varint(bytes, pos);
      if (pos + length > bytes.length) throw new Error('not an ONNX file (field past the end)');
      visit(field, bytes.subarray(pos, pos + length));
      pos += length;
    } else throw new Error(`not an ONNX file (wire type ${wire})`);
  }
  if (pos !== bytes.length) throw new Error('not an ONNX file (truncated)');
}

export function readMetadata(bytes) {
  const props = {};
  fields(bytes, (field, body) => {
    if (field !== METADATA_PROPS) return;
    let key = '';
    let value = '';
    fields(body, (f, b) => {
      if (f === 1) key = utf8.decode(b);
      else if (f === 2) value = utf8.decode(b);
    });
    props[key] = value;
  });
  return props;
}
