#!/usr/bin/env node
// server.js - a local S3 for tests (tests/sh/remote_s3.sh), and a client to
// put objects into it.
//
//   node server.js serve --dir DIR --port-file FILE [--bucket NAME]...
//                        [--address 127.0.0.1] [--port 0] [--require-auth]
//                        [--no-verify]
//   node server.js put --endpoint URL --bucket NAME --key KEY --file PATH
//                      [--access-key ID --secret-key SECRET] [--region R]
//
// The server is s3rver (a third-party S3 emulator in Node.js; credentials
// S3RVER / S3RVER) with one thing added. s3rver 3.7.1 does NOT check
// Signature Version 4: its authentication middleware accepts any SigV4
// Authorization header whose access key id it knows ("Signature version 4
// calculation is unimplemented"), and any unsigned request. So this wrapper
// puts a middleware in front of s3rver's own that recomputes the signature
// of every signed request with AWS's JavaScript signer (@smithy/signature-v4,
// the one the AWS SDK for JavaScript v3 signs with, not pagein's code) over
// the headers the client says it signed, and answers 403
// SignatureDoesNotMatch when the signatures differ. --require-auth also
// refuses unsigned requests (403 AccessDenied), as a private bucket would.
// --no-verify leaves s3rver as it is (to show that it alone accepts a wrong
// secret).
//
// The first line on stdout, and the port file, say where it listens.
'use strict';

const fs = require('fs');
const http = require('http');
const S3rver = require('s3rver');
const { SignatureV4 } = require('@smithy/signature-v4');
const { Hash } = require('@smithy/hash-node');
const { HttpRequest } = require('@smithy/protocol-http');

// s3rver's own pair, and one whose secret differs from its key id (so that a
// test can look for the secret in logs).
// AKIDPAGEINTOKEN stands for temporary credentials: its requests must carry
// (and sign) x-amz-security-token TOKENS[id].
const KEYS = { S3RVER: 'S3RVER', AKIDPAGEINTEST: 'pagein+Test/Secret0', AKIDPAGEINTOKEN: 'pagein/Token+Secret1' };
const TOKENS = { AKIDPAGEINTOKEN: 'pagein-test-session-token/+=' };
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account');
for (const id of ['AKIDPAGEINTEST', 'AKIDPAGEINTOKEN']) DUMMY_ACCOUNT.createKeyPair(id, KEYS[id]);
const sha256 = Hash.bind(null, 'sha256');

function args(argv) {
  const o = { bucket: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const name = a.slice(2);
    if (name === 'require-auth' || name === 'no-verify') {
      o[name] = true;
    } else if (i + 1 < argv.length) {
      if (name === 'bucket') o.bucket.push(argv[++i]);
      else o[name] = argv[++i];
    } else {
      throw new Error(`${a} needs a value`);
    }
  }
  return o;
}

function deny(ctx, code, message) {
  ctx.status = 403;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

function verifier(requireAuth) {
  return async function verifySigV4(ctx, next) {
    const auth = ctx.get('authorization');
    if (!auth) {
      if (requireAuth) return deny(ctx, 'AccessDenied', 'Anonymous access is refused by this server (--require-auth)');
      return next();
    }
    const m = AUTH_RE.exec(auth);
    if (!m) return deny(ctx, 'AuthorizationHeaderMalformed', 'not an AWS4-HMAC-SHA256 Authorization header');
    const [, akid, day, region, service, signedList, signature] = m;
    if (!(akid in KEYS)) return deny(ctx, 'InvalidAccessKeyId', 'unknown access key id');
    const amzDate = ctx.get('x-amz-date');
    const d = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
    if (!d || amzDate.slice(0, 8) !== day) return deny(ctx, 'AccessDenied', 'x-amz-date missing or not the scope date');
    const signingDate = new Date(Date.UTC(+d[1], +d[2] - 1, +d[3], +d[4], +d[5], +d[6]));
    // as S3: a request more than 15 minutes from the server's clock is refused
    // (so a signer that puts local time, not UTC, in x-amz-date is caught)
    if (Math.abs(signingDate.getTime() - Date.now()) > 15 * 60 * 1000)
      return deny(ctx, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.');
    const signed = signedList.split(';');
    if (!signed.includes('host') || !signed.includes('x-amz-date'))
      return deny(ctx, 'AccessDenied', 'host and x-amz-date must be signed');
    const headers = {};
    for (const h of signed) headers[h] = ctx.get(h);
    const raw = ctx.req.url;
    const q = raw.indexOf('?');
    const query = {};
    if (q >= 0) {
      for (const part of raw.slice(q + 1).split('&')) {
        if (!part) continue;
        const eq = part.indexOf('=');
        const k = decodeURIComponent(eq < 0 ? part : part.slice(0, eq));
        query[k] = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1));
      }
    }
    const request = new HttpRequest({
      method: ctx.method,
      protocol: 'http:',
      hostname: headers.host,
      path: q >= 0 ? raw.slice(0, q) : raw, // as sent: S3 signs the path as sent, no second encoding
      query,
      headers,
    });
    const signer = new SignatureV4({
      credentials: { accessKeyId: akid, secretAccessKey: KEYS[akid] },
      region,
      service,
      sha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
    const out = await signer.sign(request, { signingDate, signableHeaders: new Set(signed) });
    const want = /Signature=([0-9a-f]{64})/.exec(out.headers.authorization || out.headers.Authorization)[1];
    if (want !== signature)
      return deny(ctx, 'SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
    if (akid in TOKENS && (!signed.includes('x-amz-security-token') || ctx.get('x-amz-security-token') !== TOKENS[akid]))
      return deny(ctx, 'InvalidToken', 'The provided token is malformed or otherwise invalid.');
    ctx.state.sigv4Verified = true;
    return next();
  };
}

async function serve(o) {
  if (!o.dir || !o['port-file']) throw new Error('serve needs --dir and --port-file');
  const server = new S3rver({
    directory: o.dir,
    address: o.address || '127.0.0.1',
    port: o.port ? Number(o.port) : 0,
    silent: true,
    configureBuckets: o.bucket.map((name) => ({ name, configs: [] })),
  });
  if (!o['no-verify']) server.middleware.unshift(verifier(!!o['require-auth']));
  const { address, port } = await server.run();
  fs.writeFileSync(o['port-file'] + '.tmp', `${port}\n`);
  fs.renameSync(o['port-file'] + '.tmp', o['port-file']);
  console.log(`s3server listening on ${address}:${port} (SigV4 ${o['no-verify'] ? 'NOT checked' : 'checked'})`);
  const stop = () => server.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function put(o) {
  for (const k of ['endpoint', 'bucket', 'key', 'file'])
    if (!o[k]) throw new Error(`put needs --${k}`);
  const url = new URL(o.endpoint);
  const body = fs.readFileSync(o.file);
  const path = `/${o.bucket}/${o.key.split('/').map(encodeURIComponent).join('/')}`;
  const request = new HttpRequest({
    method: 'PUT',
    protocol: url.protocol,
    hostname: url.hostname,
    port: Number(url.port),
    path,
    headers: { host: url.host, 'content-length': String(body.length) },
    body,
  });
  const signer = new SignatureV4({
    credentials: { accessKeyId: o['access-key'] || 'S3RVER', secretAccessKey: o['secret-key'] || 'S3RVER' },
    region: o.region || 'us-east-1',
    service: 's3',
    sha256,
    uriEscapePath: false,
    applyChecksum: true,
  });
  const signed = await signer.sign(request);
  await new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method: 'PUT', path, headers: signed.headers },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          if (res.statusCode === 200) resolve();
          else reject(new Error(`PUT ${path}: HTTP ${res.statusCode} ${text}`));
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
  console.log(`put ${body.length} bytes at ${path}`);
}

const [cmd, ...rest] = process.argv.slice(2);
const o = args(rest);
(cmd === 'serve' ? serve(o) : cmd === 'put' ? put(o) : Promise.reject(new Error('usage: server.js serve|put ...')))
  .catch((e) => {
    console.error(`s3server: ${e.message}`);
    process.exit(1);
  });
