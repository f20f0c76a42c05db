"""MediaPipe's native log lines are filtered from fd 2; everything else written meanwhile is kept."""

import subprocess
import sys

from conftest import REPO

CHILD = r"""
import os, sys
from core.native_log import quiet_mediapipe
with quiet_mediapipe():
    os.write(2, b"W0000 00:00:1796016983.276471    7115 inference_feedback_manager.cc:114] Feedback\n")
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    with quiet_mediapipe():  # nested: one capture
        print("kept from Python", file=sys.stderr)
    os.write(2, b"E0000 00:00:1796016983.383272    7119 calculator.cc:1] a real error\n")
os.write(2, b"after\n")
"""


def test_native_noise_is_dropped_and_the_rest_kept():
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().splitlines() == [
        "kept from Python", "E0000 00:00:1796016983.383272    7119 calculator.cc:1] a real error", "after"]
