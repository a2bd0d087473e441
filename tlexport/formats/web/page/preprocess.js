// The model's preprocessing in plain JavaScript, computed exactly as tlexport computes it in
// Python (Pillow's resize, torchvision's centre crop, float32 normalisation), so a page and
// `tlexport predict` feed the network the same numbers. No imports, no DOM: it runs in node too.

// Pillow's 8-bit resampling: two passes (horizontal, then vertical), antialiased (the filter
// widens by the downscale factor), coefficients in 22-bit fixed point, rounded to 8 bits after
// each pass.
const BITS = 22;
const ONE = 1 << BITS;
const FILTERS = {
  bilinear: {
    support: 1,
    weight(x) {
      x = Math.abs(x);
      return x < 1 ? 1 - x : 0;
    },
  },
  bicubic: {
    support: 2,
    weight(x) {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

// Upper bound on an image after the shorter-side resize, as in tlexport's Python preprocessing.
export const MAX_RESIZED_PIXELS = 16 * 1024 * 1024;
export const MAX_ASPECT = 4;

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const weights = new Int32Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const taps = new Float64Array(ksize);
  const ss = 1 / filterscale; // a multiplication by the reciprocal, as Pillow rounds it
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      taps[x] = filter.weight((x + xmin - center + 0.5) * ss);
      total += taps[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = total !== 0 ? taps[x] / total : taps[x];
      weights[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, weights, bounds };
}

function clip8(sum) {
  const v = Math.floor(sum / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One pass over an RGB image (3 bytes a pixel) along x (horizontal) or y (vertical).
function pass(src, width, height, outSize, filter, horizontal) {
  const { ksize, weights, bounds } = coefficients(horizontal ? width : height, outSize, filter);
  const ow = horizontal ? outSize : width;
  const oh = horizontal ? height : outSize;
  const out = new Uint8Array(ow * oh * 3);
  const step = horizontal ? 3 : width * 3;
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const i = horizontal ? x : y;
      const first = bounds[i * 2];
      const n = bounds[i * 2 + 1];
      let base = horizontal ? (y * width + first) * 3 : (first * width + x) * 3;
      let r = ONE / 2;
      let g = ONE / 2;
      let b = ONE / 2;
      for (let t = 0; t < n; t++, base += step) {
        const k = weights[i * ksize + t];
        r += src[base] * k;
        g += src[base + 1] * k;
        b += src[base + 2] * k;
      }
      const o = (y * ow + x) * 3;
      out[o] = clip8(r);
      out[o + 1] = clip8(g);
      out[o + 2] = clip8(b);
    }
  }
  return out;
}

// Pillow's NEAREST resize (an affine scale: source positions accumulated step by step).
function nearest(src, width, height, ow, oh) {
  const xs = new Int32Array(ow);
  const sx = width / ow;
  const sy = height / oh;
  let xo = sx * 0.5;
  for (let x = 0; x < ow; x++, xo += sx) xs[x] = Math.min(Math.trunc(xo), width - 1);
  const out = new Uint8Array(ow * oh * 3);
  let yo = sy * 0.5;
  for (let y = 0; y < oh; y++, yo += sy) {
    const row = Math.min(Math.trunc(yo), height - 1) * width;
    for (let x = 0; x < ow; x++) {
      const s = (row + xs[x]) * 3;
      const o = (y * ow + x) * 3;
      out[o] = src[s];
      out[o + 1] = src[s + 1];
      out[o + 2] = src[s + 2];
    }
  }
  return out;
}

// Size after resizing the shorter side to `resize`, computed as torchvision does.
export function resizedSize(width, height, resize) {
  if (width <= height) return [resize, Math.trunc((resize * height) / width)];
  return [Math.trunc((resize * width) / height), resize];
}

// Which pass Pillow runs first: always the horizontal one before Pillow 13; from 13 on, the
// vertical one when the height shrinks by more than twice as many pixels as the width.
export function verticalFirst(width, height, ow, oh, pillowMajor) {
  return pillowMajor >= 13 && oh < height && height - oh > 2 * (width - ow);
}

// RGB bytes resized to (ow, oh) as Pillow's Image.resize with `interpolation` (Pillow
// `pillowMajor`: the version whose pass order to follow).
export function resizeRgb(rgb, width, height, ow, oh, interpolation, pillowMajor = 13) {
  if (ow === width && oh === height) return rgb;
  if (interpolation === 'nearest') return nearest(rgb, width, height, ow, oh);
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`unknown interpolation ${interpolation}`);
  if (verticalFirst(width, height, ow, oh, pillowMajor)) {
    const tall = oh !== height ? pass(rgb, width, height, oh, filter, false) : rgb;
    return ow !== width ? pass(tall, width, oh, ow, filter, true) : tall;
  }
  const wide = ow !== width ? pass(rgb, width, height, ow, filter, true) : rgb;
  return oh !== height ? pass(wide, ow, height, oh, filter, false) : wide;
}

// RGBA (as a canvas gives it: not premultiplied) -> RGB, transparency composited on white as
// Pillow's alpha_composite does.
export function rgbFromRgba(rgba) {
  const n = rgba.length / 4;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      // 7 bits of extra precision and a rounded division by 255, as Pillow's integer code.
      const t = rgba[i * 4 + c] * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7);
      out[i * 3 + c] = (((t >> 8) + t) >> 8) >> 7;
    }
  }
  return out;
}

// torchvision's CenterCrop: offsets rounded half to even, zero padding when smaller than the crop.
function centreCrop(rgb, width, height, crop) {
  const ph = Math.max(crop - height, 0);
  const pw = Math.max(crop - width, 0);
  const h = height + ph;
  const w = width + pw;
  const top = roundHalfEven((h - crop) / 2);
  const left = roundHalfEven((w - crop) / 2);
  const out = new Uint8Array(crop * crop * 3);
  for (let y = 0; y < crop; y++) {
    const sy = y + top - Math.floor(ph / 2);
    if (sy < 0 || sy >= height) continue;
    for (let x = 0; x < crop; x++) {
      const sx = x + left - Math.floor(pw / 2);
      if (sx < 0 || sx >= width) continue;
      const s = (sy * width + sx) * 3;
      const o = (y * crop + x) * 3;
      out[o] = rgb[s];
      out[o + 1] = rgb[s + 1];
      out[o + 2] = rgb[s + 2];
    }
  }
  return out;
}

function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// Refuse what tlexport's Python preprocessing refuses (a 1x20000 strip would need gigabytes).
export function checkSize(width, height, resize) {
  if (width < 1 || height < 1) throw new Error(`empty image (${width}x${height} pixels)`);
  const [w, h] = resizedSize(width, height, resize);
  const limit = Math.max(MAX_RESIZED_PIXELS, MAX_ASPECT * resize * resize);
  if (w * h > limit) {
    throw new Error(`extreme aspect ratio: ${width}x${height} pixels would be resized to ${w}x${h} (limit ${limit} pixels)`);
  }
}

// RGB bytes (HWC) -> float32 NCHW [1, 3, crop, crop]: resize the shorter side, centre-crop,
// scale to [0, 1], subtract the mean and divide by the std, each step rounded to float32 as
// numpy computes it.
export function toTensor(rgb, width, height, pre, pillowMajor = 13) {
  checkSize(width, height, pre.resize);
  const [w, h] = resizedSize(width, height, pre.resize);
  const resized = resizeRgb(rgb, width, height, w, h, pre.interpolation, pillowMajor);
  const crop = centreCrop(resized, w, h, pre.crop);
  const plane = pre.crop * pre.crop;
  const out = new Float32Array(3 * plane);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    const mean = f(pre.mean[c]);
    const std = f(pre.std[c]);
    for (let i = 0; i < plane; i++) {
      out[c * plane + i] = f(f(f(crop[i * 3 + c] / 255) - mean) / std);
    }
  }
  return out;
}
