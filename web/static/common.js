"use strict";
// Shared by the patient and clinician pages: non-trickle offer/answer with the server.
const dmaskCommon = (function () {
  const token = location.pathname.split("/").pop();

  function iceGatheringComplete(pc, timeoutMs) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const check = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", check);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(resolve, timeoutMs || 4000);
    });
  }

  async function negotiate(pc) {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const response = await fetch("/api/offer/" + token, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    await pc.setRemoteDescription(body);
  }

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  async function openCamera() {
    return navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: true,
    });
  }

  // Frames per second of a <video>, counted with requestVideoFrameCallback.
  function frameCounter(video) {
    const counter = { frames: 0, fps: 0 };
    let windowStart = performance.now(), windowFrames = 0;
    const onFrame = () => {
      counter.frames += 1;
      windowFrames += 1;
      const now = performance.now();
      if (now - windowStart >= 1000) {
        counter.fps = (windowFrames * 1000) / (now - windowStart);
        windowStart = now;
        windowFrames = 0;
      }
      video.requestVideoFrameCallback(onFrame);
    };
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(onFrame);
    return counter;
  }

  return { token, negotiate, setStatus, openCamera, frameCounter };
})();
