"""The Slicer side of ScarEnhance: logic over MRML nodes (no Qt), the background process, dependencies."""
