"use strict";
// Patient: send camera + mic; show only the masked stream coming back (never the local preview).
(function () {
  const { negotiate, setStatus, openCamera, frameCounter } = dmaskCommon;
  const maskedSelf = document.getElementById("masked-self");
  const clinicianVideo = document.getElementById("clinician-video");
  const clinicianAudio = document.getElementById("clinician-audio");
  const state = (window.dmask = { pc: null, error: null });

  async function start() {
    setStatus("opening camera…");
    const stream = await openCamera();
    const pc = (state.pc = new RTCPeerConnection());
    const [camera] = stream.getVideoTracks();
    const [mic] = stream.getAudioTracks();
    // m-line order the server relies on: camera ↔ masked self-view, mic ↔ clinician audio,
    // then receive-only clinician video.
    const cameraTx = pc.addTransceiver(camera, { direction: "sendrecv" });
    const micTx = mic ? pc.addTransceiver(mic, { direction: "sendrecv" })
                      : pc.addTransceiver("audio", { direction: "recvonly" });
    const clinicianTx = pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      const media = new MediaStream([event.track]);
      if (event.transceiver === cameraTx) maskedSelf.srcObject = media;
      else if (event.transceiver === clinicianTx) clinicianVideo.srcObject = media;
      else if (event.transceiver === micTx) clinicianAudio.srcObject = media;
    };
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState === "connected" ? "connected" : pc.connectionState);
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        stream.getTracks().forEach((t) => t.stop());
        setStatus("the consult has ended or the connection was lost");
      }
    };
    state.selfCounter = frameCounter(maskedSelf);
    state.clinicianCounter = frameCounter(clinicianVideo);
    setStatus("connecting…");
    await negotiate(pc);
  }

  start().catch((err) => {
    state.error = String(err);
    setStatus("could not start: " + err.message);
    const button = document.getElementById("start");
    button.hidden = false;
    button.onclick = () => { button.hidden = true; start().catch((e) => setStatus("could not start: " + e.message)); };
  });
})();
