// Dollars as people read them, by the rule of trainyard/money.py (`format_usd`), so
// the dashboard prints a figure as the CLI and the API's messages do: $0.00052, $3.10, $12,400.
// `toFixed` rounds half up on the float's exact value, as the Python side does.
"use strict";

(function (root) {
  const MAX_DECIMALS = 10;

  function usdDecimals(amount) {
    const a = Math.abs(amount);
    if (a === 0 || !Number.isFinite(a)) return 2;
    if (Number(a.toFixed(2)) >= 1000) return 0;
    let decimals = 2;
    let threshold = 0.1;
    while (a < threshold && decimals < MAX_DECIMALS) {
      decimals += 1;
      threshold /= 10;
    }
    return decimals;
  }

  function formatUsd(amount) {
    const value = Number(amount);
    if (!Number.isFinite(value)) return `$${value}`;
    const decimals = usdDecimals(value);
    let digits = Math.abs(value).toFixed(decimals);
    if (decimals > 2) {
      digits = digits.replace(/0+$/, "");
      const [whole, frac] = digits.split(".");
      digits = `${whole}.${(frac || "").padEnd(2, "0")}`;
    }
    if (decimals === 0) digits = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const sign = value < 0 && Number(digits.replace(/,/g, "")) !== 0 ? "-" : "";
    return `${sign}$${digits}`;
  }

  root.trainyardMoney = { formatUsd, usdDecimals };
})(globalThis);
