"""Sources of frames and sound: replay fixtures, V4L2/USB and IP cameras, the screen, the microphone."""
