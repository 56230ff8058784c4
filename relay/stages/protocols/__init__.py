"""Protocol decoders: one pure module per wire protocol, each `decode(body, ...) -> Decoded`."""
