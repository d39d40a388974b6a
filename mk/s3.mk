# s3:// sources: tests/s3_get (a tool of tests/sh/remote_s3.sh) talks to an S3 server with libcurl (the
# library does not need it; the HTTP source links it on its own).
CURL_LIBS := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)

$(BUILD)/tests/s3_get: tests/s3_get.c $(BUILD)/libpagein.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libpagein.a $(LDFLAGS) $(LDLIBS) $(CURL_LIBS) -o $@

# A tool of remote_s3.sh (it needs the server that script starts), so not
# a test_* program the runner would start on its own.
tests: $(BUILD)/tests/s3_get
