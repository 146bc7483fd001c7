// Gender of every image in a list with @vladmandic/face-api on the tfjs-wasm backend, offline.
//
//   node faceapi_gender.js LIST.txt OUT.jsonl
//
// LIST.txt holds one image path a line. OUT.jsonl gets one line per image (appended; paths
// already there are skipped, so an interrupted run resumes):
//   {"path", "width", "height", "error",
//    "crop": {"gender", "p_female"},                          // the whole image as the face
//    "faces": [{"box": [x, y, w, h], "score", "gender", "p_female"}]}  // detected faces
// "crop": the age-gender net on the whole image (a face another tool already cropped);
// "faces": detectAllFaces (SSD MobileNet v1 at minConfidence 0.1, the package's own demo
// setting; its default is 0.5: filter on "score") + 68-point landmarks + age-gender, the path a
// user with photos takes. Models are read from the npm package's model/
// folder and the wasm binaries from node_modules: nothing is downloaded. Images are decoded by
// sharp (JPEG, PNG, WebP), EXIF orientation applied, as RGB.

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const sharp = require('sharp');
const tf = require('@tensorflow/tfjs');
const wasm = require('@tensorflow/tfjs-backend-wasm');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const PKG = path.dirname(require.resolve('@vladmandic/face-api/package.json'));
const DETECT = new faceapi.SsdMobilenetv1Options({ minConfidence: 0.1 });
const WASM_DIR = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));

async function decode(file) {
  const { data, info } = await sharp(file).rotate().removeAlpha().toColourspace('srgb')
    .raw().toBuffer({ resolveWithObject: true });
  return tf.tensor3d(new Uint8Array(data), [info.height, info.width, 3], 'int32');
}

function genderRow(pred) {
  const p = pred.gender === 'female' ? pred.genderProbability : 1 - pred.genderProbability;
  return { gender: pred.gender, p_female: p };
}

async function one(file) {
  const img = await decode(file);
  try {
    const crop = await faceapi.nets.ageGenderNet.predictAgeAndGender(img);
    const found = await faceapi.detectAllFaces(img, DETECT).withFaceLandmarks().withAgeAndGender();
    const faces = found.map((f) => {
      const b = f.detection.box;
      return { box: [b.x, b.y, b.width, b.height], score: f.detection.score, ...genderRow(f) };
    });
    const [height, width] = img.shape;
    return { path: file, width, height, error: null, crop: genderRow(crop), faces };
  } finally {
    tf.dispose(img);
  }
}

async function main() {
  const [list, out] = process.argv.slice(2);
  if (!list || !out) {
    process.stderr.write('usage: node faceapi_gender.js LIST.txt OUT.jsonl\n');
    process.exit(2);
  }
  wasm.setWasmPaths(`${path.join(WASM_DIR, 'dist')}/`, false);
  await tf.setBackend('wasm');
  await tf.ready();
  const models = path.join(PKG, 'model');
  await faceapi.nets.ssdMobilenetv1.loadFromDisk(models);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(models);
  await faceapi.nets.ageGenderNet.loadFromDisk(models);
  process.stderr.write(`face-api ${faceapi.version} tfjs ${tf.version_core} backend ${tf.getBackend()}\n`);
  const done = new Set();
  if (fs.existsSync(out)) {
    for (const line of fs.readFileSync(out, 'utf8').split('\n')) {
      if (line) done.add(JSON.parse(line).path);
    }
  }
  const sink = fs.createWriteStream(out, { flags: 'a' });
  const lines = readline.createInterface({ input: fs.createReadStream(list) });
  for await (const file of lines) {
    if (!file || done.has(file)) continue;
    let row;
    try {
      row = await one(file);
    } catch (e) {
      row = { path: file, crop: null, faces: [], error: String(e && e.message ? e.message : e) };
    }
    sink.write(`${JSON.stringify(row)}\n`);
  }
  await new Promise((resolve) => { sink.end(resolve); });
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
