$d0 << EOD
1.7 304.028
2.7 304.891
3.7 163.035
4.7 171.758
EOD
$d1 << EOD
-0.1 32.642
0.9 41.255
1.9 63.81
2.9 55.498
3.9 141.65
4.9 132.007
EOD
$d2 << EOD
0.1 36.766
1.1 71.693
2.1 39.211
3.1 61.59
4.1 18.62
5.1 42.573
EOD
$d3 << EOD
0.30000000000000004 3594.373
1.3 3870.148
2.3 653.091
3.3 960.234
4.3 9.644
5.3 44.96
EOD
$d4 << EOD
0.0 0.5
1.0 20.0
2.0 0.5
3.0 20.0
4.0 0.5
5.0 20.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/11-vm-downtime.png'
set title "#11 VM migration downtime (STOP→RESUME), ferry vs stock QEMU (committed VM results)"
set xlabel ""
set ylabel "ms (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set style fill solid 0.6
set boxwidth 0.18
set xtics ("dirty-400 0ms" 0, "dirty-400 20ms" 1, "dirty-50 0ms" 2, "dirty-50 20ms" 3, "idle 0ms" 4, "idle 20ms" 5) rotate by -25
set xrange [-0.6:5.6]
plot $d0 using 1:2 with boxes  title "stock-precopy", \
  $d1 using 1:2 with boxes  title "stock-postcopy", \
  $d2 using 1:2 with boxes  title "ferry-hybrid", \
  $d3 using 1:2 with boxes  title "ferry-precopy", \
  $d4 using 1:2 with points pt 1 ps 3 lc rgb 'black' title "floor: one RTT"
