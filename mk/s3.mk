# s3:// sources: tests/test_s3_get talks to an S3 server with libcurl (the
# library does not need it; the HTTP source links it on its own).
CURL_LIBS := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)

$(BUILD)/tests/test_s3_get: tests/test_s3_get.c $(BUILD)/libpagein.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libpagein.a $(LDFLAGS) $(LDLIBS) $(CURL_LIBS) -o $@
