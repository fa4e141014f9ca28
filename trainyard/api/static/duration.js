// Durations as people read them, by the rule of trainyard/durations.py (`format_duration`), so
// the dashboard prints a span as the CLI and the plans' reasons do: 15s, 4m10s, 2h05m, 3d04h.
"use strict";

(function (root) {
  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    const value = Number(seconds);
    if (Number.isNaN(value)) return "never";
    if (!Number.isFinite(value)) return value > 0 ? "never" : "-never";
    if (value < 0) return "-" + formatDuration(-value);
    if (value > 0 && value < 0.5) return "<1s";
    const whole = Math.floor(value + 0.5);
    if (whole < 60) return `${whole}s`;
    if (whole < 3600) {
      return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s`;
    }
    const totalMinutes = Math.floor(value / 60 + 0.5);
    if (totalMinutes < 24 * 60) {
      return `${Math.floor(totalMinutes / 60)}h${String(totalMinutes % 60).padStart(2, "0")}m`;
    }
    const totalHours = Math.floor(value / 3600 + 0.5);
    return `${Math.floor(totalHours / 24)}d${String(totalHours % 24).padStart(2, "0")}h`;
  }

  root.trainyardDuration = { formatDuration };
})(globalThis);
