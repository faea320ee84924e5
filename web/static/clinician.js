"use strict";
// Clinician: receive masked video + patient audio + metrics; send own camera and mic.
(function () {
  const { negotiate, setStatus, openCamera, frameCounter, token } = dmaskCommon;
  const $ = (id) => document.getElementById(id);
  const patientVideo = $("patient-video");
  const state = (window.dmask = { pc: null, metricsCount: 0, lastMessage: null, error: null,
                                  audioTracks: 0, plotDraws: 0 });
  const plots = dmaskPlots.create({
    yaw: $("plot-yaw"), pitch: $("plot-pitch"), deviation: $("plot-deviation"),
    lids: $("plot-lids"), blinks: $("plot-blinks"), osc: $("plot-osc"),
  });

  const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

  function onMetrics(message) {
    state.metricsCount += 1;
    state.lastMessage = message;
    const m = message.metrics;
    $("tracking").textContent = m.tracked ? "yes" : "lost";
    $("fps").textContent = fmt(message.fps, 1);
    $("dropped").textContent = message.dropped;
    $("blinks").textContent = m.blink_count;
    $("blink-rate").textContent = fmt(m.blink_rate_per_min, 1);
    $("osc").textContent = fmt(m.oscillation_frequency_hz, 2);
    plots.push(m);
  }

  async function start() {
    setStatus("opening camera…");
    const stream = await openCamera();
    $("self-view").srcObject = stream; // the clinician is not masked
    const pc = (state.pc = new RTCPeerConnection());
    const [camera] = stream.getVideoTracks();
    const [mic] = stream.getAudioTracks();
    pc.addTransceiver(camera, { direction: "sendrecv" });
    if (mic) pc.addTransceiver(mic, { direction: "sendrecv" });
    else pc.addTransceiver("audio", { direction: "recvonly" });
    const channel = pc.createDataChannel("metrics", { ordered: false, maxRetransmits: 0 });
    channel.onmessage = (event) => onMetrics(JSON.parse(event.data));
    pc.ontrack = (event) => {
      const media = new MediaStream([event.track]);
      if (event.track.kind === "video") patientVideo.srcObject = media;
      else { state.audioTracks += 1; $("patient-audio").srcObject = media; }
    };
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState === "connected" ? "connected" : pc.connectionState);
      if (pc.connectionState === "closed" || pc.connectionState === "failed") {
        stream.getTracks().forEach((t) => t.stop());
      }
    };
    state.counter = frameCounter(patientVideo);
    setInterval(() => { $("rx-fps").textContent = fmt(state.counter.fps, 1); }, 1000);
    setStatus("connecting…");
    await negotiate(pc);
  }

  $("end").addEventListener("click", async () => {
    $("end").disabled = true;
    await fetch("/api/end/" + token, { method: "POST" });
    if (state.pc) state.pc.close();
    setStatus("consult ended");
  });

  (function draw() {
    if (plots.draw()) state.plotDraws += 1;
    requestAnimationFrame(draw);
  })();

  start().catch((err) => { state.error = String(err); setStatus("could not start: " + err.message); });
})();
