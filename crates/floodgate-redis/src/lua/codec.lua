-- floodgate: the packed state of one policy, one field of the id's hash (field = the policy key).
-- Value: <kind><updated - EPOCH> <updated - created> <expiry - updated> <a> <b> <c> <d>, integers in base 36 (digits
-- 0-9a-z, a '-' before a negative one) separated by spaces, trailing absent values left out ('_' stands for an
-- absent one in the middle; a trailing 0 is left out too; '=' repeats the third, as a meter's level and unit often
-- do its expiry). The state number that is a time (a for 'w' and 's', b for 'm' and 'l') is written as
-- updated minus it, so a fixed window's state is about 26 bytes and the id's hash stays listpack-encoded (values
-- up to 64 bytes). A sliding log's c and d are run members ("<ms>" or "<ms>:<units>"), kept as they are.
local function fmt(x) return string.format('%.0f', x) end -- decimal, for the prelude and the log's members
local EPOCH = 1735689600000000 -- 2025-01-01 in µs: a time now takes 9 base-36 digits, not 10
-- Every pair of base-36 digits, 00 to zz: enc takes two digits at a time with one string.sub (4x faster than one).
local P36 = '000102030405060708090a0b0c0d0e0f0g0h0i0j0k0l0m0n0o0p0q0r0s0t0u0v0w0x0y0z101112131415161718191a1b1c1d1e1f1g1h1i1j1k1l1m1n1o1p1q1r1s1t1u1v1w1x1y1z202122232425262728292a2b2c2d2e2f2g2h2i2j2k2l2m2n2o2p2q2r2s2t2u2v2w2x2y2z303132333435363738393a3b3c3d3e3f3g3h3i3j3k3l3m3n3o3p3q3r3s3t3u3v3w3x3y3z404142434445464748494a4b4c4d4e4f4g4h4i4j4k4l4m4n4o4p4q4r4s4t4u4v4w4x4y4z505152535455565758595a5b5c5d5e5f5g5h5i5j5k5l5m5n5o5p5q5r5s5t5u5v5w5x5y5z606162636465666768696a6b6c6d6e6f6g6h6i6j6k6l6m6n6o6p6q6r6s6t6u6v6w6x6y6z707172737475767778797a7b7c7d7e7f7g7h7i7j7k7l7m7n7o7p7q7r7s7t7u7v7w7x7y7z808182838485868788898a8b8c8d8e8f8g8h8i8j8k8l8m8n8o8p8q8r8s8t8u8v8w8x8y8z909192939495969798999a9b9c9d9e9f9g9h9i9j9k9l9m9n9o9p9q9r9s9t9u9v9w9x9y9za0a1a2a3a4a5a6a7a8a9aaabacadaeafagahaiajakalamanaoapaqarasatauavawaxayazb0b1b2b3b4b5b6b7b8b9babbbcbdbebfbgbhbibjbkblbmbnbobpbqbrbsbtbubvbwbxbybzc0c1c2c3c4c5c6c7c8c9cacbcccdcecfcgchcicjckclcmcncocpcqcrcsctcucvcwcxcyczd0d1d2d3d4d5d6d7d8d9dadbdcdddedfdgdhdidjdkdldmdndodpdqdrdsdtdudvdwdxdydze0e1e2e3e4e5e6e7e8e9eaebecedeeefegeheiejekelemeneoepeqereseteuevewexeyezf0f1f2f3f4f5f6f7f8f9fafbfcfdfefffgfhfifjfkflfmfnfofpfqfrfsftfufvfwfxfyfzg0g1g2g3g4g5g6g7g8g9gagbgcgdgegfggghgigjgkglgmgngogpgqgrgsgtgugvgwgxgygzh0h1h2h3h4h5h6h7h8h9hahbhchdhehfhghhhihjhkhlhmhnhohphqhrhshthuhvhwhxhyhzi0i1i2i3i4i5i6i7i8i9iaibicidieifigihiiijikiliminioipiqirisitiuiviwixiyizj0j1j2j3j4j5j6j7j8j9jajbjcjdjejfjgjhjijjjkjljmjnjojpjqjrjsjtjujvjwjxjyjzk0k1k2k3k4k5k6k7k8k9kakbkckdkekfkgkhkikjkkklkmknkokpkqkrksktkukvkwkxkykzl0l1l2l3l4l5l6l7l8l9lalblcldlelflglhliljlklllmlnlolplqlrlsltlulvlwlxlylzm0m1m2m3m4m5m6m7m8m9mambmcmdmemfmgmhmimjmkmlmmmnmompmqmrmsmtmumvmwmxmymzn0n1n2n3n4n5n6n7n8n9nanbncndnenfngnhninjnknlnmnnnonpnqnrnsntnunvnwnxnynzo0o1o2o3o4o5o6o7o8o9oaobocodoeofogohoiojokolomonooopoqorosotouovowoxoyozp0p1p2p3p4p5p6p7p8p9papbpcpdpepfpgphpipjpkplpmpnpopppqprpsptpupvpwpxpypzq0q1q2q3q4q5q6q7q8q9qaqbqcqdqeqfqgqhqiqjqkqlqmqnqoqpqqqrqsqtquqvqwqxqyqzr0r1r2r3r4r5r6r7r8r9rarbrcrdrerfrgrhrirjrkrlrmrnrorprqrrrsrtrurvrwrxryrzs0s1s2s3s4s5s6s7s8s9sasbscsdsesfsgshsisjskslsmsnsospsqsrssstsusvswsxsyszt0t1t2t3t4t5t6t7t8t9tatbtctdtetftgthtitjtktltmtntotptqtrtstttutvtwtxtytzu0u1u2u3u4u5u6u7u8u9uaubucudueufuguhuiujukulumunuoupuqurusutuuuvuwuxuyuzv0v1v2v3v4v5v6v7v8v9vavbvcvdvevfvgvhvivjvkvlvmvnvovpvqvrvsvtvuvvvwvxvyvzw0w1w2w3w4w5w6w7w8w9wawbwcwdwewfwgwhwiwjwkwlwmwnwowpwqwrwswtwuwvwwwxwywzx0x1x2x3x4x5x6x7x8x9xaxbxcxdxexfxgxhxixjxkxlxmxnxoxpxqxrxsxtxuxvxwxxxyxzy0y1y2y3y4y5y6y7y8y9yaybycydyeyfygyhyiyjykylymynyoypyqyrysytyuyvywyxyyyzz0z1z2z3z4z5z6z7z8z9zazbzczdzezfzgzhzizjzkzlzmznzozpzqzrzsztzuzvzwzxzyzz'
local function enc(x) -- an integer, |x| < 2^53, exactly
  local neg = x < 0
  if neg then x = -x end
  local s = ''
  while x >= 1296 do
    local d = x % 1296
    s = string.sub(P36, 2 * d + 1, 2 * d + 2) .. s
    x = (x - d) / 1296
  end
  if x >= 36 then s = string.sub(P36, 2 * x + 1, 2 * x + 2) .. s else s = string.sub(P36, 2 * x + 2, 2 * x + 2) .. s end
  if neg then return '-' .. s end
  return s
end
local function dec(s)
  if string.sub(s, 1, 1) == '-' then return -tonumber(string.sub(s, 2), 36) end
  return tonumber(s, 36)
end
local function time_slot(kind)
  if kind == 'm' or kind == 'l' then return 'b' end
  return 'a'
end
local SLOTS = {'a', 'b', 'c', 'd'}
local function pack(s)
  local up = tonumber(s.up)
  local tf = time_slot(s.k)
  local out = {s.k .. enc(up - EPOCH), enc(up - tonumber(s.cr)), enc(tonumber(s.e) - up)}
  local n = #out
  for _, f in ipairs(SLOTS) do
    local x = s[f]
    if f == 'd' and s.k ~= 'l' then x = nil end -- only a log has d (a log's left over by a change of algorithm)
    if not x then
      out[#out + 1] = '_'
    else
      if f == tf then
        x = enc(up - tonumber(x))
      elseif type(x) == 'number' or s.k ~= 'l' or (f ~= 'c' and f ~= 'd') then
        x = enc(tonumber(x) or 0)
      end
      if x == out[3] and x ~= '0' then x = '=' end
      out[#out + 1] = x
      if x ~= '0' then n = #out end
    end
  end
  return table.concat(out, ' ', 1, n)
end
-- The state, or nil for a value that is not one (a marker written beside a log key of the wrong type).
local function unpack_state(v)
  if not v then return nil end
  local p = {}
  for x in string.gmatch(v, '[^ ]+') do p[#p + 1] = x end
  if #p < 3 then return nil end
  local k = string.sub(p[1], 1, 1)
  local ok, up = pcall(dec, string.sub(p[1], 2))
  if not ok or not up then return nil end
  up = up + EPOCH
  local s = {k = k, up = up, cr = up - dec(p[2]), e = up + dec(p[3])}
  local tf = time_slot(k)
  for i, f in ipairs(SLOTS) do
    local x = p[3 + i]
    if x == '=' then x = p[3] end
    if x == nil and f ~= 'd' then x = '0' end
    if x ~= nil and x ~= '_' then
      if f == tf then
        s[f] = up - dec(x)
      elseif k == 'l' and (f == 'c' or f == 'd') then
        s[f] = x
      else
        s[f] = dec(x)
      end
    end
  end
  return s
end
-- Holds something (a bucket that another algorithm's call emptied, or whose log's runs have all left, holds
-- nothing).
local function holds(kind, a, b, c)
  a, b, c = tonumber(a), tonumber(b), tonumber(c)
  if kind == 'w' then return b ~= 0 end
  if kind == 's' then return b ~= 0 or c ~= 0 end
  return a ~= 0
end
