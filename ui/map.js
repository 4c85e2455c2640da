// WebGL2 scatter map: every row as a point. Positions live in one GPU buffer, colors (RGBA8) in
// another, so 1M points draw in one call; pan / zoom only change two uniforms. Picking (hover, box,
// lasso) runs on the CPU against a uniform grid built once per data set.

const VERT = `#version 300 es
in vec2 a_pos;
in vec4 a_color;
uniform vec2 u_center;
uniform float u_scale;      // pixels per data unit
uniform vec2 u_half;        // half the viewport in pixels
uniform float u_size;       // point diameter in pixels
uniform float u_dim;        // 1 = fade every point (something is highlighted)
out vec4 v_color;
void main() {
  vec2 p = (a_pos - u_center) * u_scale / u_half;
  gl_Position = vec4(p, 0.0, 1.0);
  gl_PointSize = u_size;
  vec4 c = a_color;
  if (u_dim > 0.5) c = vec4(mix(c.rgb, vec3(0.82), 0.55), c.a * 0.35);
  v_color = c;
}`;

const FRAG = `#version 300 es
precision mediump float;
in vec4 v_color;
uniform float u_ring;       // 1 = draw a dark outline (highlighted points)
out vec4 outColor;
void main() {
  vec2 d = gl_PointCoord * 2.0 - 1.0;
  float r = dot(d, d);
  if (r > 1.0) discard;
  vec3 rgb = v_color.rgb;
  if (u_ring > 0.5 && r > 0.62) rgb = vec3(0.08, 0.08, 0.12);
  outColor = vec4(rgb * v_color.a, v_color.a);
}`;

function compile(gl, type, src) {
  const s = gl.createShader(type);
  gl.shaderSource(s, src);
  gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s) || "shader error");
  return s;
}

const GRID = 256;

/** a convex polygon (screen px) pushed `pad` px outward from its centre, vertex by vertex */
function padded(pts, pad) {
  let cx = 0;
  let cy = 0;
  for (const [x, y] of pts) {
    cx += x / pts.length;
    cy += y / pts.length;
  }
  return pts.map(([x, y]) => {
    const d = Math.hypot(x - cx, y - cy) || 1;
    return [x + ((x - cx) / d) * pad, y + ((y - cy) / d) * pad];
  });
}

export class PointMap {
  /**
   * @param {HTMLCanvasElement} canvas  the WebGL canvas
   * @param {HTMLCanvasElement} overlay a 2-D canvas on top (lasso / box outline)
   * @param {HTMLCanvasElement} [shapes] a 2-D canvas between them for outlines (setShapes)
   */
  constructor(canvas, overlay, shapes = null) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.shapesCanvas = shapes;
    this.shapes = []; // [{poly: [[x, y], ...], label, color, width, fill}] in data coordinates
    const gl = canvas.getContext("webgl2", { antialias: false, premultipliedAlpha: true, alpha: false });
    if (!gl) throw new Error("this browser has no WebGL2; the map needs it (try a current Chrome or Firefox)");
    this.gl = gl;
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog) || "link error");
    this.prog = prog;
    this.loc = {
      pos: gl.getAttribLocation(prog, "a_pos"),
      color: gl.getAttribLocation(prog, "a_color"),
      center: gl.getUniformLocation(prog, "u_center"),
      scale: gl.getUniformLocation(prog, "u_scale"),
      half: gl.getUniformLocation(prog, "u_half"),
      size: gl.getUniformLocation(prog, "u_size"),
      dim: gl.getUniformLocation(prog, "u_dim"),
      ring: gl.getUniformLocation(prog, "u_ring"),
    };
    this.vao = gl.createVertexArray();
    this.posBuf = gl.createBuffer();
    this.colorBuf = gl.createBuffer();
    this.hiBuf = gl.createBuffer();
    gl.bindVertexArray(this.vao);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuf);
    gl.enableVertexAttribArray(this.loc.pos);
    gl.vertexAttribPointer(this.loc.pos, 2, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.colorBuf);
    gl.enableVertexAttribArray(this.loc.color);
    gl.vertexAttribPointer(this.loc.color, 4, gl.UNSIGNED_BYTE, true, 0, 0);
    gl.bindVertexArray(null);

    this.n = 0;
    this.xy = new Float32Array(0);
    this.highlight = null; // Uint32Array of indices drawn on top with a ring
    this.hiCount = 0;
    this.view = { cx: 0, cy: 0, scale: 1 };
    this.mode = "pan";
    this.frames = 0;
    this.lastFrameMs = 0;
    this.lod = 1; // share of the points drawn while the view moves (see _adaptLod)
    this.interacting = false;
    this.drawnLast = 0;
    this.onHover = null; // (index | -1, clientX, clientY) => void
    this.onSelect = null; // (Uint32Array indices, kind) => void
    this.onClickPoint = null; // (index) => void
    this._pending = false;
    this._drag = null;
    this._bindEvents();
    this._resizeObserver = new ResizeObserver(() => this.resize());
    this._resizeObserver.observe(canvas.parentElement);
    this.resize();
  }

  // -- data ------------------------------------------------------------------------------------

  /** xy: Float32Array [x0, y0, x1, y1, ...] */
  setPositions(xy) {
    const gl = this.gl;
    this.xy = xy;
    this.n = xy.length / 2;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuf);
    gl.bufferData(gl.ARRAY_BUFFER, xy, gl.STATIC_DRAW);
    this._buildGrid();
    this.resetView();
  }

  /** rgba: Uint8Array, 4 bytes per point */
  setColors(rgba) {
    this.colors = rgba; // kept for the tests (what each point is painted)
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.colorBuf);
    gl.bufferData(gl.ARRAY_BUFFER, rgba, gl.DYNAMIC_DRAW);
    this.requestDraw();
  }

  /** indices to draw on top with an outline (null / empty: nothing highlighted) */
  setHighlight(indices) {
    const gl = this.gl;
    if (!indices || indices.length === 0) {
      this.highlight = null;
      this.hiCount = 0;
      this._hiSet = null;
    } else {
      this.highlight = indices instanceof Uint32Array ? indices : Uint32Array.from(indices);
      this.hiCount = this.highlight.length;
      this._hiSet = this.hiCount <= 200000 ? new Set(this.highlight) : null;
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.hiBuf);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, this.highlight, gl.DYNAMIC_DRAW);
    }
    this.requestDraw();
  }

  _buildGrid() {
    const n = this.n;
    const xy = this.xy;
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i];
      const y = xy[2 * i + 1];
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
    }
    if (!Number.isFinite(minX)) {
      minX = minY = 0;
      maxX = maxY = 1;
    }
    if (maxX - minX < 1e-9) maxX = minX + 1;
    if (maxY - minY < 1e-9) maxY = minY + 1;
    this.bounds = { minX, minY, maxX, maxY };
    const sx = GRID / (maxX - minX);
    const sy = GRID / (maxY - minY);
    const cellOf = new Int32Array(n);
    const counts = new Int32Array(GRID * GRID + 1);
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i];
      const y = xy[2 * i + 1];
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        cellOf[i] = -1;
        continue;
      }
      const cx = Math.min(GRID - 1, Math.floor((x - minX) * sx));
      const cy = Math.min(GRID - 1, Math.floor((y - minY) * sy));
      const c = cy * GRID + cx;
      cellOf[i] = c;
      counts[c + 1]++;
    }
    for (let c = 0; c < GRID * GRID; c++) counts[c + 1] += counts[c];
    const items = new Uint32Array(n);
    const fill = counts.slice(0, GRID * GRID);
    for (let i = 0; i < n; i++) {
      const c = cellOf[i];
      if (c >= 0) items[fill[c]++] = i;
    }
    this.grid = { start: counts, items, sx, sy };
  }

  _cellRange(x0, y0, x1, y1) {
    const { minX, minY } = this.bounds;
    const { sx, sy } = this.grid;
    const clamp = (v) => Math.max(0, Math.min(GRID - 1, v));
    return [
      clamp(Math.floor((Math.min(x0, x1) - minX) * sx)),
      clamp(Math.floor((Math.min(y0, y1) - minY) * sy)),
      clamp(Math.floor((Math.max(x0, x1) - minX) * sx)),
      clamp(Math.floor((Math.max(y0, y1) - minY) * sy)),
    ];
  }

  /** Nearest point within `radiusPx` of the canvas position (CSS px), or -1. */
  pick(px, py, radiusPx = 8) {
    if (!this.n) return -1;
    const [x, y] = this.toData(px, py);
    const r = radiusPx / this.view.scale;
    const [c0, r0, c1, r1] = this._cellRange(x - r, y - r, x + r, y + r);
    const { start, items } = this.grid;
    const xy = this.xy;
    let best = -1;
    let bestD = r * r;
    const hi = this._hiSet;
    for (let gy = r0; gy <= r1; gy++) {
      for (let gx = c0; gx <= c1; gx++) {
        const c = gy * GRID + gx;
        for (let k = start[c]; k < start[c + 1]; k++) {
          const i = items[k];
          const dx = xy[2 * i] - x;
          const dy = xy[2 * i + 1] - y;
          let d = dx * dx + dy * dy;
          if (hi && hi.has(i)) d *= 0.5; // prefer highlighted points, they are drawn on top
          if (d <= bestD) {
            bestD = d;
            best = i;
          }
        }
      }
    }
    return best;
  }

  /** Indices inside a polygon given in data coordinates ([[x, y], ...]). */
  inPolygon(poly) {
    if (poly.length < 3 || !this.n) return new Uint32Array(0);
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -Infinity;
    let y1 = -Infinity;
    for (const [x, y] of poly) {
      x0 = Math.min(x0, x);
      y0 = Math.min(y0, y);
      x1 = Math.max(x1, x);
      y1 = Math.max(y1, y);
    }
    const [c0, r0, c1, r1] = this._cellRange(x0, y0, x1, y1);
    const { start, items } = this.grid;
    const xy = this.xy;
    const out = [];
    const m = poly.length;
    for (let gy = r0; gy <= r1; gy++) {
      for (let gx = c0; gx <= c1; gx++) {
        const c = gy * GRID + gx;
        for (let k = start[c]; k < start[c + 1]; k++) {
          const i = items[k];
          const px = xy[2 * i];
          const py = xy[2 * i + 1];
          if (px < x0 || px > x1 || py < y0 || py > y1) continue;
          let inside = false;
          for (let a = 0, b = m - 1; a < m; b = a++) {
            const ya = poly[a][1];
            const yb = poly[b][1];
            if (ya > py !== yb > py) {
              const xa = poly[a][0];
              const xb = poly[b][0];
              if (px < ((xb - xa) * (py - ya)) / (yb - ya) + xa) inside = !inside;
            }
          }
          if (inside) out.push(i);
        }
      }
    }
    out.sort((a, b) => a - b);
    return Uint32Array.from(out);
  }

  // -- view ------------------------------------------------------------------------------------

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const rect = this.canvas.parentElement.getBoundingClientRect();
    this.cssW = Math.max(1, rect.width);
    this.cssH = Math.max(1, rect.height);
    for (const c of [this.canvas, this.overlay, this.shapesCanvas]) {
      if (!c) continue;
      c.width = Math.round(this.cssW * dpr);
      c.height = Math.round(this.cssH * dpr);
      c.style.width = `${this.cssW}px`;
      c.style.height = `${this.cssH}px`;
    }
    this.dpr = dpr;
    if (this.bounds && !this._userMoved) this.resetView();
    else this.requestDraw();
  }

  resetView() {
    if (!this.bounds) return;
    const { minX, minY, maxX, maxY } = this.bounds;
    const pad = 0.06;
    const w = (maxX - minX) * (1 + 2 * pad);
    const h = (maxY - minY) * (1 + 2 * pad);
    this.view = {
      cx: (minX + maxX) / 2,
      cy: (minY + maxY) / 2,
      scale: Math.min(this.cssW / w, this.cssH / h),
    };
    this._userMoved = false;
    this.requestDraw();
  }

  /** Zoom so the given indices fill most of the view. */
  focus(indices) {
    if (!indices || !indices.length) return;
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -Infinity;
    let y1 = -Infinity;
    for (const i of indices) {
      const x = this.xy[2 * i];
      const y = this.xy[2 * i + 1];
      if (!Number.isFinite(x)) continue;
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
    if (!Number.isFinite(x0)) return;
    const b = this.bounds;
    const minSpan = Math.max(b.maxX - b.minX, b.maxY - b.minY) * 0.15;
    const w = Math.max(x1 - x0, minSpan) * 1.5;
    const h = Math.max(y1 - y0, minSpan) * 1.5;
    this.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, scale: Math.min(this.cssW / w, this.cssH / h) };
    this._userMoved = true;
    this.requestDraw();
  }

  toData(px, py) {
    const v = this.view;
    return [v.cx + (px - this.cssW / 2) / v.scale, v.cy - (py - this.cssH / 2) / v.scale];
  }

  toScreen(x, y) {
    const v = this.view;
    return [(x - v.cx) * v.scale + this.cssW / 2, this.cssH / 2 - (y - v.cy) * v.scale];
  }

  pointSize() {
    if (!this.bounds) return 3;
    const { minX, minY, maxX, maxY } = this.bounds;
    const zoom = this.view.scale / Math.min(this.cssW / (maxX - minX), this.cssH / (maxY - minY));
    const n = this.n;
    const base = Math.sqrt((this.cssW * this.cssH) / Math.max(n, 1)) * 0.55;
    const size = Math.max(1.5, Math.min(n < 2000 ? 7 : 6, base)) * Math.pow(Math.max(zoom, 0.2), 0.35);
    return Math.min(size, 14);
  }

  requestDraw() {
    if (this._pending) return;
    this._pending = true;
    requestAnimationFrame((ts) => {
      this._pending = false;
      if (this.interacting) this._adaptLod(ts);
      this._lastTs = ts;
      this.draw();
    });
  }

  /**
   * Level of detail while panning / zooming: when frames come slower than ~25 fps (software GL, a
   * weak GPU, a million points) only a share of the points is drawn until the motion stops; the full
   * set is drawn 200 ms later. Highlighted points are always drawn. Rows are in id order, which is
   * unrelated to map position, so a prefix is an even sample of the map.
   */
  _adaptLod(ts) {
    const dt = this._lastTs ? ts - this._lastTs : 0;
    if (dt <= 0 || dt > 500) return; // first frame of a gesture: nothing measured yet
    if (dt > 40) this.lod = Math.max(0.05, this.lod * 0.6);
    else if (dt < 22) this.lod = Math.min(1, this.lod * 1.25);
  }

  _interacted() {
    this.interacting = true;
    clearTimeout(this._idleTimer);
    this._idleTimer = setTimeout(() => {
      this.interacting = false;
      this._lastTs = 0;
      this.requestDraw();
    }, 200);
  }

  /** Draw now; `full` ignores the level of detail (every point, even mid-gesture). */
  draw(full = false) {
    const t0 = performance.now();
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(0.985, 0.985, 0.99, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (this.n) {
      gl.useProgram(this.prog);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
      gl.bindVertexArray(this.vao);
      const v = this.view;
      const dpr = this.dpr;
      gl.uniform2f(this.loc.center, v.cx, v.cy);
      gl.uniform1f(this.loc.scale, v.scale);
      gl.uniform2f(this.loc.half, this.cssW / 2, this.cssH / 2);
      const size = this.pointSize();
      gl.uniform1f(this.loc.size, size * dpr);
      gl.uniform1f(this.loc.dim, this.hiCount ? 1 : 0);
      gl.uniform1f(this.loc.ring, 0);
      const count = !full && this.interacting && this.lod < 1 ? Math.max(Math.min(this.n, 20000), Math.floor(this.n * this.lod)) : this.n;
      gl.drawArrays(gl.POINTS, 0, count);
      this.drawnLast = count;
      if (this.hiCount) {
        gl.uniform1f(this.loc.dim, 0);
        gl.uniform1f(this.loc.ring, 1);
        gl.uniform1f(this.loc.size, Math.max(size * 1.5, 6) * dpr);
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.hiBuf);
        gl.drawElements(gl.POINTS, this.hiCount, gl.UNSIGNED_INT, 0);
      }
      gl.bindVertexArray(null);
    }
    this._drawShapes();
    this.frames++;
    this.lastFrameMs = performance.now() - t0;
    this.canvas.dataset.frames = String(this.frames);
    this.canvas.dataset.points = String(this.n);
  }

  /** Outlines drawn over the points (data coordinates), each with an optional label; [] clears. */
  setShapes(shapes) {
    this.shapes = shapes || [];
    this.requestDraw();
  }

  _drawShapes() {
    const cv = this.shapesCanvas;
    if (!cv) return;
    const ctx = cv.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, cv.width, cv.height);
    if (!this.shapes.length || !this.n) return;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.lineJoin = "round";
    const labels = [];
    const pad = this.pointSize() * 0.75 + 3; // around the points' discs, not through them
    for (const s of this.shapes) {
      const pts = padded(s.poly.map(([x, y]) => this.toScreen(x, y)), pad);
      ctx.beginPath();
      pts.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
      if (s.fill) {
        ctx.fillStyle = s.fill;
        ctx.fill();
      }
      ctx.strokeStyle = s.color || "#1f2937";
      ctx.lineWidth = s.width || 1.5;
      ctx.stroke();
      if (s.label) labels.push([s, pts.reduce((a, b) => (b[1] < a[1] ? b : a))]);
    }
    // labels last, above every outline: at the outline's top, white halo for contrast
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(255,255,255,0.92)";
    for (const [s, [x, y]] of labels) {
      ctx.strokeText(s.label, x, y - 3);
      ctx.fillStyle = s.color || "#1f2937";
      ctx.fillText(s.label, x, y - 3);
    }
  }

  /** Draw now and count pixels that differ from the background (for tests and the bench). */
  litPixels() {
    this.draw(true);
    const gl = this.gl;
    const w = this.canvas.width;
    const h = this.canvas.height;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    let lit = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (Math.abs(px[i] - 251) > 6 || Math.abs(px[i + 1] - 251) > 6 || Math.abs(px[i + 2] - 252) > 6) lit++;
    }
    return lit;
  }

  // -- interaction -----------------------------------------------------------------------------

  setMode(mode) {
    this.mode = mode;
    this.canvas.parentElement.dataset.mode = mode;
  }

  _local(e) {
    const r = this.canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }

  _bindEvents() {
    const el = this.overlay;
    el.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const [px, py] = this._local(e);
        const [x, y] = this.toData(px, py);
        const factor = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
        const v = this.view;
        v.scale = Math.max(1e-6, v.scale * factor);
        // keep the data point under the cursor fixed
        v.cx = x - (px - this.cssW / 2) / v.scale;
        v.cy = y + (py - this.cssH / 2) / v.scale;
        this._userMoved = true;
        this._interacted();
        this.requestDraw();
      },
      { passive: false }
    );
    el.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      el.setPointerCapture(e.pointerId);
      const p = this._local(e);
      const mode = e.shiftKey && this.mode === "pan" ? "box" : this.mode;
      this._drag = { mode, start: p, last: p, path: [p], moved: false };
      if (this.onHover) this.onHover(-1, 0, 0);
    });
    el.addEventListener("pointermove", (e) => {
      const p = this._local(e);
      const d = this._drag;
      if (!d) {
        if (this.onHover) {
          const i = this.pick(p[0], p[1]);
          this.onHover(i, e.clientX, e.clientY);
        }
        return;
      }
      if (Math.hypot(p[0] - d.start[0], p[1] - d.start[1]) > 3) d.moved = true;
      if (d.mode === "pan") {
        this.view.cx -= (p[0] - d.last[0]) / this.view.scale;
        this.view.cy += (p[1] - d.last[1]) / this.view.scale;
        this._userMoved = true;
        this._interacted();
        this.requestDraw();
      } else {
        d.path.push(p);
        this._drawOverlay(d);
      }
      d.last = p;
    });
    const finish = (e) => {
      const d = this._drag;
      this._drag = null;
      if (!d) return;
      this._clearOverlay();
      if (!d.moved) {
        const p = this._local(e);
        const i = this.pick(p[0], p[1]);
        if (i >= 0 && this.onClickPoint) this.onClickPoint(i);
        return;
      }
      if (d.mode === "box") {
        const [a, b] = [this.toData(...d.start), this.toData(...d.last)];
        const poly = [a, [b[0], a[1]], b, [a[0], b[1]]];
        if (this.onSelect) this.onSelect(this.inPolygon(poly), "box");
      } else if (d.mode === "lasso") {
        this.lastPath = d.path;
        const poly = d.path.map((p) => this.toData(p[0], p[1]));
        if (this.onSelect) this.onSelect(this.inPolygon(poly), "lasso");
      }
    };
    el.addEventListener("pointerup", finish);
    el.addEventListener("pointercancel", finish);
    el.addEventListener("pointerleave", () => {
      if (!this._drag && this.onHover) this.onHover(-1, 0, 0);
    });
  }

  _clearOverlay() {
    const ctx = this.overlay.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
  }

  _drawOverlay(d) {
    const ctx = this.overlay.getContext("2d");
    this._clearOverlay();
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.strokeStyle = "#1f2937";
    ctx.fillStyle = "rgba(59,130,246,0.10)";
    ctx.lineWidth = 1.5;
    ctx.setLineDash([5, 4]);
    ctx.beginPath();
    if (d.mode === "box") {
      const [x0, y0] = d.start;
      const [x1, y1] = d.last;
      ctx.rect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    } else {
      d.path.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
    }
    ctx.fill();
    ctx.stroke();
  }

  /** test / automation hook: select by a polygon in CSS pixels of the canvas */
  selectScreenPolygon(points, kind = "lasso") {
    const poly = points.map(([x, y]) => this.toData(x, y));
    const idx = this.inPolygon(poly);
    if (this.onSelect) this.onSelect(idx, kind);
    return idx.length;
  }
}
