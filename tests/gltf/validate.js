// Validate a .glb with the Khronos glTF validator; print its JSON report on stdout.
// Usage: node tests/gltf/validate.js FILE.glb
const fs = require("fs");
const validator = require("gltf-validator");

const path = process.argv[2];
validator
  .validateBytes(new Uint8Array(fs.readFileSync(path)), { uri: path, maxIssues: 100 })
  .then((report) => console.log(JSON.stringify(report, null, 1)))
  .catch((error) => {
    console.error(error);
    process.exit(2);
  });
