"use strict";
// Start page: create a consult with the start key from the URL fragment (never sent in URLs/logs).
(function () {
  const key = new URLSearchParams(location.hash.slice(1)).get("key") || "";
  const $ = (id) => document.getElementById(id);
  $("create").addEventListener("click", async () => {
    $("error").hidden = true;
    try {
      const response = await fetch("/api/consults", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
        body: "{}",
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      $("consult-id").textContent = body.consult;
      $("patient-url").value = location.origin + body.patient_url;
      $("clinician-url").value = location.origin + body.clinician_url;
      $("open-clinician").href = body.clinician_url;
      $("idle").textContent = Math.round(body.idle_timeout_s / 60);
      $("maxdur").textContent = Math.round(body.max_duration_s / 60);
      $("links").hidden = false;
    } catch (err) {
      $("error").textContent = "Could not create a consult: " + err.message;
      $("error").hidden = false;
    }
  });
  $("copy-patient").addEventListener("click", () => navigator.clipboard.writeText($("patient-url").value));
})();
