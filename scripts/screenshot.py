#!/usr/bin/env python3
"""Screenshots of pages that keep loading (Consul's UI holds blocking queries open, so
`chromium --screenshot` fires before it has rendered): headless Chromium over the DevTools
protocol, waiting a fixed time after navigation. Used for the pictures in docs/.

    pip install websocket-client
    python3 scripts/screenshot.py URL OUT.png [WIDTHxHEIGHT] [WAIT_SECONDS]
"""
import base64, json, subprocess, sys, tempfile, time, urllib.request

import websocket  # websocket-client


def main():
    url, out = sys.argv[1], sys.argv[2]
    width, height = (int(v) for v in (sys.argv[3] if len(sys.argv) > 3 else "1280x720").split("x"))
    wait = float(sys.argv[4]) if len(sys.argv) > 4 else 6.0
    port = 9333
    profile = tempfile.mkdtemp(prefix="berth-shot-")
    chrome = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
         f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                page = next(p for p in pages if p["type"] == "page")
                break
            except Exception:
                time.sleep(0.1)
        ws = websocket.create_connection(page["webSocketDebuggerUrl"])
        ids = iter(range(1, 1000))

        def call(method, **params):
            n = next(ids)
            ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == n:
                    return msg.get("result", {})

        call("Emulation.setDeviceMetricsOverride", width=width, height=height,
             deviceScaleFactor=1, mobile=False)
        call("Page.navigate", url=url)
        time.sleep(wait)
        shot = call("Page.captureScreenshot", format="png")
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    finally:
        chrome.kill()
        chrome.wait()


if __name__ == "__main__":
    main()
