"""The wire: frames and their protocol, transports, page batches sent and received, digests."""
