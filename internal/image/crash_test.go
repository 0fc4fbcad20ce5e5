package image_test

const crashHelperEnv = "SANDPOOL_IMAGE_CRASH_HELPER"

func crashHelper() {}
