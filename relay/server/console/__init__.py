"""The operator console: one static page (console.html/.js/.css, no external assets, no build
step) served by the relay, the JSON it polls (`state`), the server-side history its charts draw
(`history`), its mapping playground (`playground`) and who may open it (`access`)."""
