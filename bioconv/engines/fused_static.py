r"""The model-independent part of the fused kernel's source (appended to the generated module).

``run`` loops over its chunk of the images (one call per thread), steps and layers in Brian2's schedule:
``update`` (groups + thresholds, generated), spike list, synaptic delivery of each
projection's source spikes of this step (the input's: +1 pathway then the ``_neg`` pathway), the
gated max-pool for pool layers, ``reset`` (generated), counting and spike recording.
See :mod:`bioconv.engines.fused` for the data layout.
"""

STATIC = r'''
@numba.njit(cache=True, inline="always")
def collect(fired, words, lo, hi, spk):
    """Write the indices k in [lo, hi) with fired[k] to spk[lo:lo+n], ascending; return n.

    The flags (bytes 0 or 1) are read eight at a time as 64-bit words; each set bit of a word is
    one spike, found with ``tzcnt`` and cleared (few neurons spike per step, so testing every
    flag would cost a branch or a store per neuron). Word indices are unsigned, so no
    negative-index wraparound is computed."""
    n = 0
    k = lo
    while k < hi and (k & 7) != 0:
        spk[lo + n] = k
        n += fired[k]
        k += 1
    one = np.uint64(1)
    for wi in range(np.uint64(k >> 3), np.uint64(hi >> 3)):
        w = words[wi]
        while w != 0:
            spk[lo + n] = np.int64(wi << np.uint64(3)) + np.int64(trailing_zeros(w) >> np.uint64(3))
            n += 1
            w &= w - one
    k = max(k, (hi >> 3) << 3)
    while k < hi:
        spk[lo + n] = k
        n += fired[k]
        k += 1
    return n


@numba.njit(cache=True, inline="always")
def deliver_conv(dst, lo, idx, base, shift, n, sign, p, cl, geo, wconv, tpos, tk):
    """Shared-kernel delivery of the presynaptic neurons ``idx[base:base + n] - shift``: per spike
    and kernel offset (the target tables of :func:`bioconv.engines.fused_network.conv_targets`), the
    C_out weights added to one output position (``cl``: contiguous targets; else one per channel plane)."""
    c_out, h_o, w_o, kh, kw, h_in, w_in, w0, t0 = (
        geo[p, 0], geo[p, 1], geo[p, 2], geo[p, 3], geo[p, 4], geo[p, 9], geo[p, 10], geo[p, 11], geo[p, 12])
    plane_in = h_in * w_in
    plane = h_o * w_o
    for q in range(n):
        i = idx[base + q] - shift
        c = i // plane_in
        e0 = t0 + (i - c * plane_in) * (kh * kw)  # this input position's row of the target tables
        for e in range(e0, e0 + kh * kw):
            pos = tpos[e]
            if pos < 0:
                break
            wb = w0 + (c * kh * kw + tk[e]) * c_out
            src = wconv[wb:wb + c_out]
            if cl:
                tgt = dst[lo + pos * c_out:lo + (pos + 1) * c_out]
                if sign > 0:
                    for o in range(c_out):
                        tgt[o] += src[o]
                else:
                    for o in range(c_out):
                        tgt[o] -= src[o]
            elif sign > 0:
                for o in range(c_out):
                    dst[lo + pos + o * plane] += src[o]
            else:
                for o in range(c_out):
                    dst[lo + pos + o * plane] -= src[o]


@numba.njit(cache=True, inline="always")
def deliver_csr(dst, lo, idx, base, shift, n, sign, r0, rowptr, cols, weights):
    """Explicit-synapse delivery of the presynaptic neurons ``idx[base:base + n] - shift``: each one's
    CSR row (row ``r0 + i``), in Brian2's synapse order."""
    ulo = np.uint64(lo)
    for q in range(n):
        r = r0 + idx[base + q] - shift
        a, b = np.uint64(rowptr[r]), np.uint64(rowptr[r + 1])  # unsigned: no negative-index wraparound
        if sign > 0:
            for s in range(a, b):
                dst[ulo + np.uint64(cols[s])] += weights[s]
        else:
            for s in range(a, b):
                dst[ulo + np.uint64(cols[s])] += -weights[s]


@numba.njit(cache=True, inline="always")
def deliver_segments(dst, lo, idx, base, shift, n, sign, p, geo, wconv, seg):
    """Shared-kernel delivery into a channel-last target of the presynaptic neurons
    ``idx[base:base + n] - shift`` (ascending): per spike and kernel row, one contiguous run of
    targets (the segment table of :func:`bioconv.engines.fused_network.conv_segments`, flattened:
    three int32 per row). Offsets are unsigned, so numba adds no negative-index wraparound and
    the runs are added with plain vector loads and stores."""
    plane_in, w0, s0, block, kh = geo[p, 9] * geo[p, 10], geo[p, 11], geo[p, 12], geo[p, 13], geo[p, 14]
    c = 0
    end = plane_in  # first index of channel c + 1 (the spikes come channel by channel)
    u1, u2, u3 = np.uint64(1), np.uint64(2), np.uint64(3)
    ulo = np.uint64(lo)
    for q in range(n):
        i = idx[base + q] - shift
        while i >= end:
            c += 1
            end += plane_in
        e = np.uint64(s0 + (i - end + plane_in) * kh) * u3
        wc = np.uint64(w0 + c * block)
        for r in range(kh):
            tb = seg[e]
            if tb < 0:
                break
            t0 = ulo + np.uint64(tb)
            wb = wc + np.uint64(seg[e + u1])
            m = np.uint64(seg[e + u2])
            if sign > 0:
                for o in range(m):
                    dst[t0 + o] += wconv[wb + o]
            else:
                for o in range(m):
                    dst[t0 + o] -= wconv[wb + o]
            e += u3


@numba.njit(cache=True, inline="always")
def project(dst, lo, idx, base, shift, n, sign, p, conv, cl, geo, wconv, tpos, tk, seg, rowptr, row_off, cols,
            weights):
    """Projection p's synaptic delivery of the presynaptic spikes ``idx[base:base + n] - shift``.
    Each helper loops over the spikes itself: an inlined call per spike would pay numba's atomic
    reference counting of every array argument per spike."""
    if conv[p] and cl[p]:
        deliver_segments(dst, lo, idx, base, shift, n, sign, p, geo, wconv, seg)
    elif conv[p]:
        deliver_conv(dst, lo, idx, base, shift, n, sign, p, cl[p], geo, wconv, tpos, tk)
    else:
        deliver_csr(dst, lo, idx, base, shift, n, sign, row_off[p], rowptr, cols, weights)


@numba.njit(cache=True, inline="always")
def gate(dst, lo, spk, plo, n, cnt, cmax, pgeo, l):
    """Gated max-pool: each presynaptic spike ``spk[plo:plo + n]`` (torch order; neuron i, its count
    before this spike ``cnt - 1``) passes to every pool unit whose window max it equals (+1 to the relay state)."""
    c_n, h_in, w_in, kh, kw, sh, sw, h_o, w_o = (pgeo[l, 0], pgeo[l, 1], pgeo[l, 2], pgeo[l, 3], pgeo[l, 4],
                                                 pgeo[l, 5], pgeo[l, 6], pgeo[l, 7], pgeo[l, 8])
    for q in range(n):
        kp = spk[plo + q]
        i = kp - plo
        count = cnt[kp] - 1
        c = i // (h_in * w_in)
        rem = i - c * h_in * w_in
        y = rem // w_in
        x = rem - y * w_in
        oy0 = max(0, (y - kh + sh) // sh)
        ox0 = max(0, (x - kw + sw) // sw)
        for oy in range(oy0, min(h_o, y // sh + 1)):
            if y >= oy * sh + kh:
                continue
            for ox in range(ox0, min(w_o, x // sw + 1)):
                if x >= ox * sw + kw:
                    continue
                j = lo + (c * h_o + oy) * w_o + ox
                if count == cmax[j]:
                    cmax[j] += 1
                    dst[j] += 1.0


@numba.njit(cache=True, fastmath=False, nogil=True)
def run(inp, off, model, nslot, tgt, cond, refs, rf, gated, pgeo, coef, bias, bias0, current, theta, hw, uniform, cl, lshape,
        pptr, psrc, pconv, pcl, geo, wconv, tpos, tk, seg, rowptr, row_off, cols, weights, spb, counts, out_bins, bin_counts, out_v, record_v, rec_slot, rec_t,
        rec_i, rec_n, rec_base, rec_cap, chunk, n_chunks):
    n_img, n_steps, n_in = inp.shape
    seg = seg.reshape(-1)  # the segment table's rows, three int32 each, flat (unsigned offsets)
    n_layers = off.shape[0] - 1
    n_total = off[n_layers]
    o_lo = off[n_layers - 1]
    n_out = n_total - o_lo
    # the images chunk, chunk + n_chunks, ... of the batch (one call per thread, without the GIL);
    # its work arrays are allocated once and reused for every image (no page faults per image)
    S = np.zeros((nslot, n_total), dtype=bias.dtype)
    bias_b = bias.copy()
    last = np.empty(n_total, dtype=np.int64)
    nr = np.empty(n_total, dtype=np.bool_)
    save = np.zeros(n_total, dtype=bias.dtype)
    cmax = np.empty(n_total, dtype=np.int64)
    fired = np.zeros(n_total + 16 - n_total % 8, dtype=np.uint8)
    words = fired.view(np.uint64)
    spk = np.zeros(n_total, dtype=np.int32)
    nspk = np.zeros(n_layers, dtype=np.int64)
    tmp = np.zeros(n_total, dtype=np.int32)
    tch = np.zeros(n_total, dtype=np.int32)
    ibuf = np.zeros(max(1, n_in), dtype=np.int32)
    cnt = np.zeros(n_total, dtype=np.int32)  # this image's counts (kept in cache; copied out at its end)
    nbin = np.zeros(bin_counts.shape[1:], dtype=np.int64)
    per_c = np.zeros(max(1, lshape[:, 0].max()) + 1, dtype=np.int64)
    for b in range(chunk, n_img, n_chunks):
        S[:, :] = 0
        if current:
            for k in range(off[1] - off[0]):
                bias_b[off[0] + k] = bias0[b, k]
        last[:] = -(2 ** 40)
        nr[:] = True
        cmax[:] = 0
        nspk[:] = 0
        cnt[:] = 0
        nbin[:, :] = 0
        for t in range(n_steps):
            k_bin = t // spb
            for l in range(n_layers):
                lo = off[l]
                hi = off[l + 1]
                m = model[l]
                # 1. groups, 2. thresholds (generated from the models layer)
                update(m, S, lo, hi, bias_b, theta, coef[l], fired, last, nr, t, refs[l], hw[l], uniform[l])
                n = collect(fired, words, lo, hi, spk)
                dst = S[tgt[l]]
                if rf[l]:  # schedule "reset-first": 4. resets before 3. synapses
                    reset(m, S, spk, lo, lo + n, theta)
                if cond[l]:  # frozen target: refractory neurons take no synaptic input
                    for k in range(lo, hi):
                        save[k] = dst[k]
                # 3. synapses: per projection, in order, its source's spikes of this step (input: +1, then -1)
                for p in range(pptr[l], pptr[l + 1]):
                    s = psrc[p]
                    if gated[l]:
                        gate(dst, lo, spk, off[s], nspk[s], cnt, cmax, pgeo, l)
                        continue
                    for sign in (1, -1):  # the input's +1 pathway, then its _neg pathway; a population's spikes: +1 only
                        if s < 0:
                            n_i = 0
                            for i in range(n_in):
                                if inp[b, t, i] == sign:
                                    ibuf[n_i] = i
                                    n_i += 1
                            idx, base, n_p = ibuf, 0, n_i
                        elif sign > 0:
                            idx, base, n_p = spk, off[s], nspk[s]
                        else:
                            break
                        project(dst, lo, idx, base, base, n_p, sign, p, pconv, pcl, geo, wconv, tpos, tk, seg, rowptr, row_off,
                                cols, weights)
                if cond[l]:
                    for k in range(lo, hi):
                        dst[k] = dst[k] if nr[k] else save[k]
                # 4. resets
                if not rf[l]:
                    reset(m, S, spk, lo, lo + n, theta)
                if not cl[l]:
                    for q in range(n):
                        cnt[spk[lo + q]] += 1
                if cl[l] and n > 0:  # channel-last (pos, c) order -> torch order (c, pos), stable by c
                    c_n = lshape[l, 0]
                    plane = lshape[l, 1] * lshape[l, 2]
                    per_c[:c_n + 1] = 0
                    for q in range(n):
                        kl = spk[lo + q] - lo
                        pos = kl // c_n
                        c = kl - pos * c_n
                        tmp[q] = c * plane + pos  # torch index, for now
                        tch[q] = c
                        per_c[c + 1] += 1
                    for c in range(c_n):
                        per_c[c + 1] += per_c[c]
                    for q in range(n):
                        k = tmp[q]
                        c = tch[q]
                        spk[lo + per_c[c]] = lo + k
                        cnt[lo + k] += 1
                        per_c[c] += 1
                r = rec_slot[l]
                if r >= 0:
                    for q in range(n):
                        p = rec_n[b, r]
                        if p < rec_cap[r]:
                            rec_t[rec_base[b, r] + p] = t
                            rec_i[rec_base[b, r] + p] = spk[lo + q] - lo
                        rec_n[b, r] = p + 1
                nspk[l] = n
                nbin[l, k_bin] += n
            if (t + 1) % spb == 0:
                mo = model[n_layers - 1]
                for j in range(n_out):
                    out_bins[b, k_bin, j] = cnt[o_lo + j]
                    if record_v:
                        out_v[b, k_bin, j] = readout(mo, S, o_lo + j)
        counts[b, :] = cnt
        bin_counts[b, :, :] = nbin
    return 0
'''
