// Image files -> the decoded 8-bit RGB pixels tlexport itself uses (tlexport/data/images.py):
// EXIF orientation applied; transparency composited on white with Pillow's integer arithmetic;
// 16-bit grayscale scaled (v / 257, rounded), 16-bit colour reduced to its high byte (what Pillow
// reads); palette, grayscale, 1/2/4-bit and CMYK converted as Pillow converts them. Pure
// JavaScript: pngjs and jpeg-js.
//
// PNG decodes to exactly Pillow's pixels. JPEG does not quite: jpeg-js has its own inverse DCT and
// colour conversion, and repeats chroma samples where libjpeg (Pillow) interpolates them ("fancy
// upsampling"), so a JPEG's pixels differ by a few levels (README.md beside this file).
'use strict';
const fs = require('fs');
const jpeg = require('jpeg-js');
const { PNG } = require('pngjs');

const MAX_PIXELS = 89478485; // Pillow's decompression-bomb limit, as tlexport applies it

// ---- EXIF orientation ------------------------------------------------------------------------
function exifOrientation(tiff) {
  // A TIFF header, then IFD0; tag 0x0112 is Orientation.
  if (tiff.length < 8) return 1;
  const le = tiff.toString('latin1', 0, 2) === 'II';
  const u16 = (o) => (le ? tiff.readUInt16LE(o) : tiff.readUInt16BE(o));
  const u32 = (o) => (le ? tiff.readUInt32LE(o) : tiff.readUInt32BE(o));
  const ifd = u32(4);
  if (ifd + 2 > tiff.length) return 1;
  for (let i = 0, n = u16(ifd); i < n; i++) {
    const e = ifd + 2 + i * 12;
    if (e + 12 > tiff.length) break;
    if (u16(e) === 0x0112) return u16(e + 8);
  }
  return 1;
}

function jpegExif(buf) {
  for (let o = 2; o + 4 < buf.length && buf[o] === 0xff;) {
    const marker = buf[o + 1], len = buf.readUInt16BE(o + 2);
    if (marker === 0xe1 && buf.toString('latin1', o + 4, o + 10) === 'Exif\0\0') {
      return exifOrientation(buf.subarray(o + 10, o + 2 + len));
    }
    if (marker === 0xda) break; // start of scan: no more metadata
    o += 2 + len;
  }
  return 1;
}

function pngExif(buf) {
  for (let o = 8; o + 8 <= buf.length;) {
    const len = buf.readUInt32BE(o), type = buf.toString('latin1', o + 4, o + 8);
    if (type === 'eXIf') return exifOrientation(buf.subarray(o + 8, o + 8 + len));
    if (type === 'IDAT' || type === 'IEND') break;
    o += 12 + len;
  }
  return 1;
}

// Pillow's ImageOps.exif_transpose: orientation -> the transform that makes the image upright.
function orient(img, orientation) {
  const { width: w, height: h, data } = img;
  if (orientation < 2 || orientation > 8) return img;
  const swap = orientation >= 5;
  const ow = swap ? h : w, oh = swap ? w : h, out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      let sx, sy;
      switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break; // flip left-right
        case 3: sx = w - 1 - x; sy = h - 1 - y; break; // rotate 180
        case 4: sx = x; sy = h - 1 - y; break; // flip top-bottom
        case 5: sx = y; sy = x; break; // transpose
        case 6: sx = y; sy = h - 1 - x; break; // rotate 90 clockwise
        case 7: sx = w - 1 - y; sy = h - 1 - x; break; // transverse
        default: sx = w - 1 - y; sy = x; // 8: rotate 90 counter-clockwise
      }
      out.set(data.subarray((sy * w + sx) * 3, (sy * w + sx) * 3 + 3), (y * ow + x) * 3);
    }
  }
  return { width: ow, height: oh, data: out };
}

// ---- pixel arithmetic, exactly Pillow's --------------------------------------------------------
const shiftDiv255 = (a) => (((a >>> 8) + a) >>> 8);

// Image.alpha_composite(white, rgba): Pillow's AlphaComposite.c with 7 bits of precision.
function onWhite(r, g, b, a) {
  if (a === 0) return [255, 255, 255];
  const coef1 = Math.floor((a * 255 * 255 * 128) / (a * 255 + 255 * (255 - a)));
  const coef2 = 255 * 128 - coef1;
  const mix = (c) => shiftDiv255(c * coef1 + 255 * coef2 + (0x80 << 7)) >>> 7;
  return [mix(r), mix(g), mix(b)];
}

// ---- PNG ----------------------------------------------------------------------------------------
function decodePng(buf) {
  const png = PNG.sync.read(buf, { skipRescale: true });
  const { width, height, depth, colorType } = png;
  const src = png.data, out = new Uint8Array(width * height * 3);
  const max = (1 << depth) - 1;
  // What Pillow reads: 16-bit grey as I;16 (tlexport scales it by 1/257), 16-bit colour and
  // grey+alpha by their high byte; 1/2/4-bit grey scaled to 0..255. Only palette images keep
  // their tRNS transparency (Pillow ignores a grey or RGB tRNS colour: so does tlexport).
  const level = (v) => {
    if (depth === 16) return colorType === 0 ? Math.round(v / 257) : v >>> 8;
    return depth === 8 || colorType === 3 ? v : Math.round((v * 255) / max);
  };
  const alphaKept = colorType === 3 || colorType === 4 || colorType === 6;
  for (let i = 0; i < width * height; i++) {
    const r = level(src[4 * i]), g = level(src[4 * i + 1]), b = level(src[4 * i + 2]);
    const a = alphaKept ? level(src[4 * i + 3]) : 255;
    out.set(a === 255 ? [r, g, b] : onWhite(r, g, b, a), 3 * i);
  }
  return orient({ width, height, data: out }, pngExif(buf));
}

// ---- JPEG ---------------------------------------------------------------------------------------
function decodeJpeg(buf) {
  // Grey and CMYK (Adobe) files come out as RGB too; jpeg-js's CMYK formula is Pillow's
  // (R = (255 - K)(1 - C/255)) up to rounding.
  const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: MAX_PIXELS / 1e6,
    maxMemoryUsageInMB: 2048 });
  return orient(img, jpegExif(buf));
}

function decode(path) {
  const buf = fs.readFileSync(path);
  if (buf.length === 0) throw new Error('empty file');
  if (buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return decodePng(buf);
  if (buf[0] === 0xff && buf[1] === 0xd8) return decodeJpeg(buf);
  throw new Error('not a PNG or JPEG file (this example decodes those two; tlexport predict reads more)');
}

module.exports = { decode, onWhite, orient };
