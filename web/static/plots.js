"use strict";
// Canvas strip charts of the ocular measurements (no external libraries).
const dmaskPlots = (function () {
  const WINDOW_S = 10;
  const OD = "#d35400", OS = "#2471a3", THIRD = "#7d3c98";

  class StripChart {
    constructor(canvas, title, series, range) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.title = title;
      this.series = series; // [{label, color, value: (m) => number|null}]
      this.range = range; // [min, max] minimum visible range; grows with the data
      this.samples = []; // [t, v0, v1, ...]
    }

    push(t, metrics) {
      this.samples.push([t, ...this.series.map((s) => s.value(metrics))]);
      while (this.samples.length && t - this.samples[0][0] > WINDOW_S) this.samples.shift();
    }

    draw(now) {
      const { ctx, canvas } = this;
      const w = canvas.width, h = canvas.height, left = 44, top = 16, bottom = h - 14;
      ctx.clearRect(0, 0, w, h);
      let [lo, hi] = this.range;
      for (const s of this.samples) for (const v of s.slice(1)) {
        if (v !== null && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
      const y = (v) => bottom - ((v - lo) / (hi - lo || 1)) * (bottom - top);
      const x = (t) => left + (1 - (now - t) / WINDOW_S) * (w - left - 4);
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = "#1d2730";
      ctx.fillText(this.title, left, 11);
      ctx.fillStyle = "#5b6875";
      ctx.fillText(hi.toFixed(1), 2, top + 4);
      ctx.fillText(lo.toFixed(1), 2, bottom);
      ctx.strokeStyle = "#e3e7eb";
      ctx.beginPath();
      if (lo < 0 && hi > 0) { ctx.moveTo(left, y(0)); ctx.lineTo(w, y(0)); }
      ctx.moveTo(left, top); ctx.lineTo(left, bottom); ctx.lineTo(w, bottom);
      ctx.stroke();
      let legendX = left + ctx.measureText(this.title).width + 14;
      this.series.forEach((series, i) => {
        ctx.strokeStyle = ctx.fillStyle = series.color;
        ctx.fillText(series.label, legendX, 11);
        legendX += ctx.measureText(series.label).width + 12;
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        let pen = false;
        for (const s of this.samples) {
          const v = s[i + 1];
          if (v === null || !Number.isFinite(v)) { pen = false; continue; }
          if (pen) ctx.lineTo(x(s[0]), y(v)); else ctx.moveTo(x(s[0]), y(v));
          pen = true;
        }
        ctx.stroke();
        ctx.lineWidth = 1;
      });
    }
  }

  function create(canvases) {
    const pick = (key, eye) => (m) => (m[key] ? m[key][eye] : null);
    const charts = [
      new StripChart(canvases.yaw, "gaze yaw °", [
        { label: "OD", color: OD, value: pick("gaze_yaw_deg", 0) },
        { label: "OS", color: OS, value: pick("gaze_yaw_deg", 1) }], [-10, 10]),
      new StripChart(canvases.pitch, "gaze pitch °", [
        { label: "OD", color: OD, value: pick("gaze_pitch_deg", 0) },
        { label: "OS", color: OS, value: pick("gaze_pitch_deg", 1) }], [-10, 10]),
      new StripChart(canvases.deviation, "deviation °", [
        { label: "horizontal", color: OD, value: (m) => m.horizontal_deviation_deg },
        { label: "vertical", color: OS, value: (m) => m.vertical_deviation_deg }], [-5, 5]),
      new StripChart(canvases.lids, "lid aperture (iris Ø)", [
        { label: "OD", color: OD, value: pick("lid_aperture", 0) },
        { label: "OS", color: OS, value: pick("lid_aperture", 1) }], [0, 1]),
      new StripChart(canvases.blinks, "blink count", [
        { label: "blinks", color: THIRD, value: (m) => m.blink_count }], [0, 5]),
      new StripChart(canvases.osc, "oscillation Hz", [
        { label: "frequency", color: THIRD, value: (m) => m.oscillation_frequency_hz }], [0, 5]),
    ];
    let dirty = false;
    return {
      push(metrics) {
        const t = performance.now() / 1000;
        for (const chart of charts) chart.push(t, metrics);
        dirty = true;
      },
      draw() {
        if (!dirty) return false;
        dirty = false;
        const now = performance.now() / 1000;
        for (const chart of charts) chart.draw(now);
        return true;
      },
    };
  }

  return { create };
})();
