// FP32 tensors as the v2 protocol's raw contents: row-major, little-endian, 4 bytes a value.
// DataView states the byte order (a Float32Array uses the machine's) and reads a Buffer at
// any byteOffset (a Float32Array over `buf.buffer` needs byteOffset % 4 == 0, and a small
// Buffer is usually a slice of Node's shared pool).

// The example input of `mlp`: `rows` x 64 values in [-0.5, 0.5), each exactly a float32,
// the same in every language: ((i * 37) % 101) / 100 - 0.5 rounded to float32.
export function exampleInput(rows, cols = 64) {
  const values = new Float32Array(rows * cols);
  for (let i = 0; i < values.length; i++) values[i] = ((i * 37) % 101) / 100 - 0.5;
  return { shape: [rows, cols], values };
}

export function toLittleEndian(values) {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return bytes;
}

export function fromLittleEndian(bytes) {
  if (bytes.byteLength % 4 !== 0) throw new Error(`FP32 raw contents of ${bytes.byteLength} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < values.length; i++) values[i] = view.getFloat32(i * 4, true);
  return values;
}

// One output as JSON: numbers for people, and the raw bytes (base64) for bit-exact checks
// (a JSON number loses the sign of -0 and cannot hold NaN).
export function outputJson(datatype, shape, bytes) {
  return {
    datatype,
    shape: shape.map(Number),
    data: Array.from(fromLittleEndian(bytes)),
    raw_base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64"),
  };
}
