"""What a migration copies: memory (a live process, an image file) and a disk image, their
layout and dirty tracking."""
