// The terminal's only script: validation as you type on the SI form, and live status on an
// SI's page (server-sent events). Pages work without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-validate]");
  if (form) {
    let timer = null;
    const validate = () => {
      const body = new URLSearchParams(new FormData(form));
      fetch(form.dataset.validate, { method: "POST", body, credentials: "same-origin" })
        .then((response) => response.ok ? response.json() : null)
        .then((answer) => {
          if (!answer) return;
          form.querySelectorAll(".field-error").forEach((span) => {
            const name = span.id.slice(4);
            const touched = form.elements[name] && form.elements[name].dataset.touched;
            span.textContent = touched ? (answer.errors[name] || "") : span.textContent;
            if (form.elements[name] && touched) form.elements[name].setAttribute("aria-invalid", answer.errors[name] ? "true" : "false");
          });
        })
        .catch(() => {});
    };
    form.addEventListener("input", (event) => {
      event.target.dataset.touched = "1";
      clearTimeout(timer);
      timer = setTimeout(validate, 250);
    });
  }
  const status = document.querySelector("[data-live]");
  if (status && window.EventSource) {
    const source = new EventSource(status.dataset.live);
    source.addEventListener("status", (event) => {
      const data = JSON.parse(event.data);
      status.textContent = data.status + (data.on_hold ? " (on hold)" : "");
      status.dataset.status = data.status;
    });
  }
});
