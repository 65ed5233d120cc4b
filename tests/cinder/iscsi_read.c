/* iscsi_read INITIATOR_IQN URL OUT_FILE BYTES
 * Logs in with libiscsi (CHAP credentials in the URL: iscsi://user%password@host:port/iqn/lun)
 * and writes the first BYTES of the LUN to OUT_FILE, read with READ(16) in 1 MiB requests.
 * The tests' own initiator check: libiscsi-bin has no tool that reads data. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s INITIATOR_IQN URL OUT_FILE BYTES\n", argv[0]);
        return 2;
    }
    unsigned long long want = strtoull(argv[4], NULL, 10);
    struct iscsi_context *iscsi = iscsi_create_context(argv[1]);
    if (!iscsi) {
        fprintf(stderr, "iscsi_read: no context\n");
        return 1;
    }
    struct iscsi_url *url = iscsi_parse_full_url(iscsi, argv[2]);
    if (!url) {
        fprintf(stderr, "iscsi_read: bad url: %s\n", iscsi_get_error(iscsi));
        return 1;
    }
    iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    if (iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
        fprintf(stderr, "iscsi_read: login failed: %s\n", iscsi_get_error(iscsi));
        return 1;
    }
    const uint32_t block = 512, step = 1 << 20;
    FILE *out = fopen(argv[3], "wb");
    if (!out) {
        perror("iscsi_read: open output");
        return 1;
    }
    for (unsigned long long off = 0; off < want; off += step) {
        uint32_t len = (want - off) < step ? (uint32_t)(want - off) : step;
        struct scsi_task *t = iscsi_read16_sync(iscsi, url->lun, off / block, len, block, 0, 0, 0,
                                                0, 0);
        if (!t || t->status != SCSI_STATUS_GOOD || t->datain.size != (int)len) {
            fprintf(stderr, "iscsi_read: READ16 at %llu failed: %s\n", off, iscsi_get_error(iscsi));
            return 1;
        }
        if (fwrite(t->datain.data, 1, len, out) != len) {
            perror("iscsi_read: write");
            return 1;
        }
        scsi_free_scsi_task(t);
    }
    if (fclose(out) != 0) {
        perror("iscsi_read: close");
        return 1;
    }
    iscsi_logout_sync(iscsi);
    iscsi_destroy_url(url);
    iscsi_destroy_context(iscsi);
    return 0;
}
