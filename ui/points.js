// Decoder of the binary map served by GET /api/v1/datasets/{ds}/points (format "edgeminer-points/1",
// see indexer/analysis/points.py):
//   "EMPT" | uint32 H | H bytes JSON header (padded so 8 + H is a multiple of 4) |
//   float32 x[n] | float32 y[n] | int32 cluster[n] | uint8 outcome[n]   (offsets in the header)

const DTYPES = { float32: Float32Array, int32: Int32Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array };

export function decodePoints(buffer) {
  if (buffer.byteLength < 8) throw new Error("the map data is truncated (fewer than 8 bytes)");
  const magic = new TextDecoder().decode(new Uint8Array(buffer, 0, 4));
  if (magic !== "EMPT") throw new Error(`the map data is not in the edgeminer points format (starts with ${JSON.stringify(magic)})`);
  const H = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, H)));
  if (!String(header.format || "").startsWith("edgeminer-points/")) {
    throw new Error(`unknown map format ${header.format}; reload the page after upgrading`);
  }
  const n = header.count;
  const base = 8 + H;
  const cols = {};
  for (const c of header.columns) {
    const T = DTYPES[c.dtype];
    if (!T) throw new Error(`unknown column type ${c.dtype} in the map data`);
    if (base + c.offset + n * T.BYTES_PER_ELEMENT > buffer.byteLength) throw new Error(`the map data is truncated (column ${c.name})`);
    // copy typed arrays that are not aligned for their element size
    const start = base + c.offset;
    cols[c.name] =
      start % T.BYTES_PER_ELEMENT === 0 ? new T(buffer, start, n) : new T(buffer.slice(start, start + n * T.BYTES_PER_ELEMENT));
  }
  const xy = new Float32Array(2 * n);
  const x = cols.x;
  const y = cols.y;
  for (let i = 0; i < n; i++) {
    xy[2 * i] = x[i];
    xy[2 * i + 1] = y[i];
  }
  return {
    n,
    header,
    version: header.version,
    analyzed: !!header.analyzed,
    xy,
    cluster: cols.cluster || new Int32Array(n).fill(-2),
    outcome: cols.outcome || new Uint8Array(n),
    outcomeNames: header.outcomes || ["unlabeled", "correct", "wrong_class", "false_positive", "false_negative", "no_prediction"],
  };
}
